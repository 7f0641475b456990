"""The Kubernetes objects one plugin container is made of, built as plain dicts.

Pure functions, no client and no cluster: ``kubernetes.py`` sends what they return, and the
tests validate every one of them against the Kubernetes OpenAPI schemas and assert the
sandbox's invariants. A plugin container is three objects with one name:

* a **Secret** holding the call token the plugin requires on every call (``SUMMIT_PLUGIN_TOKEN``);
* a **NetworkPolicy** selecting only that pod: ingress from the orchestrator pods on the plugin
  port, egress to the orchestrator pods on the host API port, nothing else (no DNS, no other
  pod, no internet, no metadata address);
* the **Pod**, hardened beyond the restricted Pod Security Standard.

Label values follow Kubernetes' rules (63 characters, alphanumerics and ``-_.`` inside); a
plugin id or version that breaks them (``1.0.0+build``) is sanitised in labels and kept exact
in annotations, which are what the runtime reads back.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.runtime.base import LABEL_OWNER, LABEL_PLUGIN, LABEL_VERSION, ContainerSpec

__all__ = [
    "CONTAINER_NAME",
    "HEALTH_PATH",
    "LABEL_POD",
    "LISTEN_ENV",
    "TOKEN_ENV",
    "TOKEN_KEY",
    "label_value",
    "network_policy_object",
    "owner_reference",
    "parse_pairs",
    "pod_name",
    "pod_object",
    "secret_object",
]

CONTAINER_NAME = "plugin"
# Which pod a Secret or NetworkPolicy belongs to (and the NetworkPolicy's pod selector).
LABEL_POD = "io.summit.pod"
TOKEN_KEY = "call-token"
TOKEN_ENV = "SUMMIT_PLUGIN_TOKEN"
LISTEN_ENV = "SUMMIT_PLUGIN_LISTEN"
HEALTH_PATH = "/summit/v1/health"
TMP_VOLUME = "tmp"

_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
_NAME_SLUG_LENGTH = 40


def label_value(text: str) -> str:
    """``text`` as a valid label value: itself when it already is one, else a readable prefix
    with the characters Kubernetes refuses replaced, and a hash of the exact text so two
    different values never share a label."""
    if _LABEL_VALUE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:52].strip("_.-")
    return f"{readable}-{digest}" if readable else digest


def pod_name(plugin_id: str, suffix: str) -> str:
    """``summit-<plugin id as a DNS label>-<suffix>``: at most 63 characters, so the name is a
    valid pod, Secret and NetworkPolicy name and the pod's host name."""
    slug = re.sub(r"[^a-z0-9]+", "-", plugin_id.lower()).strip("-")[:_NAME_SLUG_LENGTH]
    name = f"summit-{slug.strip('-')}-{suffix}" if slug else f"summit-{suffix}"
    if len(name) > 63 or not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", name):
        raise ValueError(f"pod name suffix {suffix!r} makes an invalid name {name!r}")
    return name


def parse_pairs(items: Iterable[str], what: str) -> dict[str, str]:
    """``["k=v", ...]`` (a list setting) as a dict; ValueError naming ``what`` otherwise."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what}: expected KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _labels(*, name: str, owner: str, plugin_id: str, version: str) -> dict[str, str]:
    return {
        LABEL_OWNER: label_value(owner),
        LABEL_PLUGIN: label_value(plugin_id),
        LABEL_VERSION: label_value(version),
        LABEL_POD: name,
        "app.kubernetes.io/managed-by": "summit",
        "app.kubernetes.io/component": "plugin",
    }


def _annotations(*, owner: str, plugin_id: str, version: str) -> dict[str, str]:
    # The exact values: a label may be a sanitised stand-in.
    return {LABEL_OWNER: owner, LABEL_PLUGIN: plugin_id, LABEL_VERSION: version}


def _metadata(*, name: str, namespace: str, owner: str, spec: ContainerSpec) -> dict[str, Any]:
    """The name, namespace, labels and annotations every object of one container carries."""
    plugin_id, version = spec.plugin_id, spec.version
    return {
        "name": name,
        "namespace": namespace,
        "labels": _labels(name=name, owner=owner, plugin_id=plugin_id, version=version),
        "annotations": _annotations(owner=owner, plugin_id=plugin_id, version=version),
    }


def owner_reference(pod: str, uid: str) -> dict[str, Any]:
    """Makes the cluster's garbage collector delete a Secret or NetworkPolicy with its pod.

    No ``blockOwnerDeletion``: setting it needs the right to update the pod's finalizers,
    which the orchestrator's Role does not grant (and does not need)."""
    return {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}


def secret_object(
    *, name: str, namespace: str, owner: str, spec: ContainerSpec, token: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(name=name, namespace=namespace, owner=owner, spec=spec),
        "type": "Opaque",
        # A call token never changes: a new container gets a new Secret.
        "immutable": True,
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode("ascii")},
    }


def network_policy_object(
    *,
    name: str,
    namespace: str,
    owner: str,
    spec: ContainerSpec,
    plugin_port: int,
    orchestrator_namespace: str,
    orchestrator_labels: Mapping[str, str],
    host_api_port: int | None,
) -> dict[str, Any]:
    """Default deny for this pod, but for the orchestrator pods: they may call the plugin
    port, and the plugin may call their host API port. Without a host API port the plugin may
    open no connection at all. DNS is not allowed: plugins are given an IP address."""
    orchestrator_peer = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": orchestrator_namespace}
        },
        "podSelector": {"matchLabels": dict(orchestrator_labels)},
    }
    egress: list[dict[str, Any]] = []
    if host_api_port is not None:
        egress.append(
            {"to": [orchestrator_peer], "ports": [{"protocol": "TCP", "port": host_api_port}]}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(name=name, namespace=namespace, owner=owner, spec=spec),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_POD: name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [orchestrator_peer], "ports": [{"protocol": "TCP", "port": plugin_port}]}
            ],
            "egress": egress,
        },
    }


def _user_ids(user: str) -> tuple[int, int]:
    uid_text, _, gid_text = user.partition(":")
    uid, gid = int(uid_text), int(gid_text or uid_text)
    if uid == 0 or gid == 0:
        raise ValueError(f"plugin pods never run as root (user {user!r})")
    return uid, gid


def pod_object(
    *,
    name: str,
    namespace: str,
    owner: str,
    spec: ContainerSpec,
    image: str,
    plugin_port: int,
    secret_name: str,
    runtime_class: str | None,
    image_pull_secrets: Iterable[str],
) -> dict[str, Any]:
    uid, gid = _user_ids(spec.user)
    resources = {
        "memory": f"{spec.memory_mb}Mi",
        "cpu": f"{spec.cpu_percent * 10}m",
        "ephemeral-storage": f"{spec.storage_mb}Mi",
    }
    env: list[dict[str, Any]] = [
        {"name": key, "value": value}
        for key, value in spec.env.items()
        if key not in (TOKEN_ENV, LISTEN_ENV)
    ]
    env += [
        {"name": LISTEN_ENV, "value": f"tcp://0.0.0.0:{plugin_port}"},
        {
            "name": TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": TOKEN_KEY}},
        },
    ]
    seccomp = {"type": "RuntimeDefault"}
    pod_spec: dict[str, Any] = {
        # The orchestrator restarts a crashed plugin itself (with its backoff and crash limit).
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "seccompProfile": seccomp,
        },
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "plugin", "containerPort": plugin_port, "protocol": "TCP"}],
                "env": env,
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": uid,
                    "runAsGroup": gid,
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": seccomp,
                },
                "readinessProbe": {
                    "httpGet": {"path": HEALTH_PATH, "port": plugin_port, "scheme": "HTTP"},
                    "periodSeconds": 2,
                    "timeoutSeconds": 2,
                    "failureThreshold": 3,
                },
                "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
            }
        ],
        # /tmp in memory like the Docker sandbox's tmpfs; it counts against the memory limit.
        "volumes": [
            {
                "name": TMP_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.tmpfs_mb}Mi"},
            }
        ],
    }
    pulls = [{"name": secret} for secret in image_pull_secrets]
    if pulls:
        pod_spec["imagePullSecrets"] = pulls
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(name=name, namespace=namespace, owner=owner, spec=spec),
        "spec": pod_spec,
    }
