"""Every object the Kubernetes runtime writes is valid for Kubernetes 1.31 (kubernetes-validate,
strict: no unknown field) and keeps the sandbox's promises, checked field by field; and what the
runtime sends to the API server is exactly those objects."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from orchestrator.runtime.base import LABEL_OWNER, LABEL_PLUGIN, LABEL_VERSION, ContainerSpec
from orchestrator.runtime.kube_objects import (
    LABEL_POD,
    label_value,
    network_policy_object,
    owner_reference,
    parse_pairs,
    pod_name,
    pod_object,
    secret_object,
)
from tests.contract.conftest import NAMESPACE, ORCH_LABELS, ORCH_NAMESPACE, EmulatorThread

pytestmark = pytest.mark.kubernetes

KUBERNETES_VERSION = "1.31.0"  # pinned: the oldest minor release the runtime supports
IMAGE = "registry.example.com/plugins/probe@sha256:" + "ab" * 32
SPEC = ContainerSpec(
    plugin_id="com.example.word-count",
    version="1.2.0+build.5",
    image=IMAGE,
    env={"GREETING": "hi", "SUMMIT_PLUGIN_TOKEN": "forged", "SUMMIT_PLUGIN_LISTEN": "unix:///x"},
    memory_mb=256,
    cpu_percent=50,
    storage_mb=100,
    tmpfs_mb=16,
    isolation="gvisor",
    call_token="s3cret-token",
)
NAME = pod_name(SPEC.plugin_id, "0123456789ab")


def build_all(host_api_port: int | None = 8701) -> dict[str, dict[str, Any]]:
    common: dict[str, Any] = {"name": NAME, "namespace": NAMESPACE, "owner": "summit", "spec": SPEC}
    return {
        "Secret": secret_object(**common, token="s3cret-token"),
        "NetworkPolicy": network_policy_object(
            **common,
            plugin_port=8080,
            orchestrator_namespace=ORCH_NAMESPACE,
            orchestrator_labels=ORCH_LABELS,
            host_api_port=host_api_port,
        ),
        "Pod": pod_object(
            **common,
            image=IMAGE,
            plugin_port=8080,
            secret_name=NAME,
            runtime_class="gvisor",
            image_pull_secrets=["regcred"],
        ),
    }


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", ["Secret", "NetworkPolicy", "Pod"])
def test_every_object_is_valid_for_the_pinned_kubernetes(kind: str) -> None:
    validate(build_all()[kind])


def test_an_object_with_an_unknown_field_is_refused() -> None:
    pod = build_all()["Pod"]
    pod["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


def test_owner_references_are_valid_on_both_dependents() -> None:
    for kind in ("Secret", "NetworkPolicy"):
        obj = build_all()[kind]
        obj["metadata"]["ownerReferences"] = [owner_reference(NAME, "0b0b-uid")]
        validate(obj)


def test_the_pod_is_hardened() -> None:
    pod = build_all()["Pod"]
    spec = pod["spec"]
    [container] = spec["containers"]
    ctx = container["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (
        10001,
        10001,
    )
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 10001
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["privileged"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in ctx["capabilities"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert not spec["hostNetwork"] and not spec["hostPID"] and not spec["hostIPC"]
    # The only volume is /tmp in memory, bounded.
    assert spec["volumes"] == [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
    ]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    # requests = limits, from the spec.
    expected = {"memory": "256Mi", "cpu": "500m", "ephemeral-storage": "100Mi"}
    assert container["resources"] == {"requests": expected, "limits": expected}
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/summit/v1/health", 8080)
    assert container["image"] == IMAGE and "@sha256:" in container["image"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["runtimeClassName"] == "gvisor"


def test_the_pod_gets_the_token_from_its_secret_and_listens_on_tcp() -> None:
    objects = build_all()
    env = objects["Pod"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert len(by_name) == len(env)  # the spec's own token and listen address are dropped
    assert by_name["GREETING"] == {"name": "GREETING", "value": "hi"}
    assert by_name["SUMMIT_PLUGIN_LISTEN"]["value"] == "tcp://0.0.0.0:8080"
    assert by_name["SUMMIT_PLUGIN_TOKEN"] == {
        "name": "SUMMIT_PLUGIN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": NAME, "key": "call-token"}},
    }
    secret = objects["Secret"]
    assert base64.b64decode(secret["data"]["call-token"]) == b"s3cret-token"
    assert secret["immutable"] is True
    assert "s3cret-token" not in str(objects["Pod"])


def test_labels_are_valid_and_annotations_exact() -> None:
    for obj in build_all().values():
        meta = obj["metadata"]
        assert meta["labels"][LABEL_VERSION] != SPEC.version  # "+" is no label character
        assert meta["labels"][LABEL_VERSION].startswith("1.2.0_build.5")
        assert meta["annotations"][LABEL_VERSION] == "1.2.0+build.5"
        assert meta["annotations"][LABEL_PLUGIN] == SPEC.plugin_id
        assert meta["labels"][LABEL_OWNER] == "summit"
        assert meta["labels"][LABEL_POD] == NAME


@pytest.mark.parametrize(
    "text",
    ["1.0.0", "1.0.0+build", "x" * 80, "-lead", "trail.", "a b/c", "", "é"],
)
def test_label_value_is_always_valid_and_distinct(text: str) -> None:
    import re

    value = label_value(text)
    assert re.fullmatch(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?", value)
    assert len(value) <= 63
    assert label_value(text + "!") != value


def test_pod_names_are_dns_labels() -> None:
    name = pod_name(
        "Com.Example.A-Very-Long-Plugin-Identifier.Of.Many.Parts.Indeed", "abcdef012345"
    )
    assert len(name) <= 63 and name == name.lower() and name.endswith("-abcdef012345")
    assert pod_name("...", "abcdef012345") == "summit-abcdef012345"


def test_the_network_policy_admits_only_the_orchestrator() -> None:
    policy = build_all()["NetworkPolicy"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {LABEL_POD: NAME}}
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    orchestrator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ORCH_NAMESPACE}},
        "podSelector": {"matchLabels": ORCH_LABELS},
    }
    # Both selectors in ONE peer: orchestrator pods in the orchestrator's namespace (two
    # peers would admit any pod there, or orchestrator-labelled pods anywhere).
    assert policy["ingress"] == [
        {"from": [orchestrator], "ports": [{"protocol": "TCP", "port": 8080}]}
    ]
    assert policy["egress"] == [
        {"to": [orchestrator], "ports": [{"protocol": "TCP", "port": 8701}]}
    ]
    # No DNS, no ipBlock (internet, metadata address), no other peer.
    assert "ipBlock" not in str(policy) and "53" not in str(policy["egress"])


def test_without_a_host_api_port_the_plugin_may_connect_nowhere() -> None:
    policy = build_all(host_api_port=None)["NetworkPolicy"]
    validate(policy)
    assert policy["spec"]["egress"] == []
    assert "Egress" in policy["spec"]["policyTypes"]


def test_parse_pairs() -> None:
    assert parse_pairs(["a=b", " c = d=e "], "X") == {"a": "b", "c": "d=e"}
    with pytest.raises(ValueError, match="X: expected KEY=VALUE"):
        parse_pairs(["novalue"], "X")


# -- what the runtime actually writes -------------------------------------------------------


@pytest.fixture
def written(emulator: EmulatorThread, kubelet: Any) -> Iterator[dict[str, dict[str, Any]]]:
    """Deploy through the runtime into the emulator; the objects it stored, by kind."""
    from tests.contract.conftest import _kubernetes_backend

    backend = _kubernetes_backend(emulator, kubelet)
    status = backend.deploy(version="2.0.0+meta", isolation="gvisor")
    http = kubelet.client
    found = {
        "Pod": http.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{status.id}").json(),
        "Secret": http.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{status.id}").json(),
        "NetworkPolicy": http.get(
            f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies/{status.id}"
        ).json(),
    }
    yield found
    backend.cleanup()


@pytest.mark.parametrize("kind", ["Secret", "NetworkPolicy", "Pod"])
def test_what_the_runtime_writes_is_valid(written: dict[str, dict[str, Any]], kind: str) -> None:
    obj = written[kind]
    # The server's own fields (status, uid, resourceVersion, ...) are valid too.
    validate(obj)


def test_the_secret_and_policy_are_owned_by_their_pod(written: dict[str, dict[str, Any]]) -> None:
    pod = written["Pod"]
    for kind in ("Secret", "NetworkPolicy"):
        [ref] = written[kind]["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        }
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["metadata"]["annotations"][LABEL_VERSION] == "2.0.0+meta"
