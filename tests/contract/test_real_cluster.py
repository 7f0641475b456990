"""The ``ContainerRuntime`` contract against a real Kubernetes cluster.

Runs when ``SUMMIT_TEST_KUBECONFIG`` names a kubeconfig and ``SUMMIT_TEST_CLUSTER_IMAGE`` a
probe plugin image by digest that the cluster can pull (``summit-plugin publish`` the fixture
plugin ``tests/fixtures/plugins/probe``); plugin pods go to ``SUMMIT_TEST_KUBE_NAMESPACE``
(default ``summit-plugins``). Otherwise every test here is skipped: no cluster can run on the
machines this project is built on.

The real kubelet runs the pods here, so deploy, status, logs, stats (the metrics API, if the
cluster has one), removal, the sweep and a failed pull are the cluster's own. Crashes and OOM
kills need calls into the pod from the test runner, which pod IPs and the NetworkPolicy do not
allow from outside the cluster; they are proven against the emulator and on Docker.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.runtime.base import ContainerSpec, ContainerStatus
from tests.contract.conftest import ORCH_LABELS, ORCH_NAMESPACE, PLUGIN_ID, Backend
from tests.contract.test_runtime_contract import (
    test_a_failed_deploy_leaves_nothing_behind,
    test_a_version_that_is_no_label_value_reads_back_exactly,
    test_deploy_answers_a_running_container_at_an_endpoint,
    test_logs_are_text_and_stats_a_dict,
    test_remove_is_idempotent_and_leaves_nothing,
    test_status_of_an_unknown_container_is_none,
    test_sweep_removes_leftovers_only,
    test_the_event_watch_ends_soon_after_stop,
)

KUBECONFIG = os.environ.get("SUMMIT_TEST_KUBECONFIG", "")
IMAGE = os.environ.get("SUMMIT_TEST_CLUSTER_IMAGE", "")
NAMESPACE = os.environ.get("SUMMIT_TEST_KUBE_NAMESPACE", "summit-plugins")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not KUBECONFIG, reason="no Kubernetes cluster here"),
]

__all__ = [
    "test_a_failed_deploy_leaves_nothing_behind",
    "test_a_version_that_is_no_label_value_reads_back_exactly",
    "test_deploy_answers_a_running_container_at_an_endpoint",
    "test_logs_are_text_and_stats_a_dict",
    "test_remove_is_idempotent_and_leaves_nothing",
    "test_status_of_an_unknown_container_is_none",
    "test_sweep_removes_leftovers_only",
    "test_the_event_watch_ends_soon_after_stop",
]


@pytest.fixture
def backend() -> Iterator[Backend]:
    if not IMAGE:
        pytest.skip("SUMMIT_TEST_CLUSTER_IMAGE (the probe plugin by digest) is not set")
    from kubernetes import client, config

    from orchestrator.runtime.kubernetes import KubernetesRuntime

    configuration = client.Configuration()
    config.load_kube_config(config_file=KUBECONFIG, client_configuration=configuration)
    api = client.ApiClient(configuration)
    runtime = KubernetesRuntime(
        namespace=NAMESPACE,
        owner=f"contract-{secrets.token_hex(3)}",
        orchestrator_namespace=ORCH_NAMESPACE,
        orchestrator_labels=ORCH_LABELS,
        api_client=api,
        start_timeout_s=180,
        sweep_grace_s=0,
    )
    core = client.CoreV1Api(api)

    def make_spec(**changes: Any) -> ContainerSpec:
        values: dict[str, Any] = {
            "plugin_id": PLUGIN_ID,
            "version": "1.0.0",
            "image": IMAGE,
            "memory_mb": 96,
            "call_token": secrets.token_urlsafe(24),
        }
        values.update(changes)
        return ContainerSpec(**values)

    def traces(cid: str, status: ContainerStatus | None) -> set[str]:
        found = set()
        for kind, read in (
            ("pod", core.read_namespaced_pod),
            ("secret", core.read_namespaced_secret),
            ("networkpolicy", client.NetworkingV1Api(api).read_namespaced_network_policy),
        ):
            try:
                read(cid, NAMESPACE)
                found.add(kind)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        return found

    def make_leftover() -> Any:
        from orchestrator.runtime.kube_objects import pod_name, secret_object

        name = pod_name(PLUGIN_ID, secrets.token_hex(6))
        body = secret_object(
            name=name, namespace=NAMESPACE, owner=runtime.owner, spec=make_spec(), token="t"
        )
        core.create_namespaced_secret(NAMESPACE, body)
        return lambda: bool(traces(name, None))

    def inventory() -> set[str]:
        selector = f"io.summit.owner={runtime.owner}"
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        found = {f"pod/{p.metadata.name}" for p in pods}
        found |= {
            f"secret/{s.metadata.name}"
            for s in core.list_namespaced_secret(NAMESPACE, label_selector=selector).items
        }
        return found

    def cannot(*_: Any) -> None:
        pytest.skip("needs a call into the pod from outside the cluster")

    made = Backend(
        name="cluster",
        runtime=runtime,
        make_spec=make_spec,
        crash=cannot,
        oom=cannot,
        broken_spec=lambda: make_spec(image=IMAGE.split("@", 1)[0] + "-absent@sha256:" + "cd" * 32),
        traces=traces,
        make_leftover=make_leftover,
        inventory=inventory,
    )
    yield made
    made.cleanup()
    api.close()
