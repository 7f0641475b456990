"""Picks the container backend the settings ask for: the local Docker Engine (both the
``ContainerRuntime`` and the ``ImageStore``), or pods in a Kubernetes cluster with images read
from their registry. The Kubernetes client is imported only when that backend is chosen."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.runtime.base import ContainerRuntime, ImageStore

__all__ = ["SERVICE_ACCOUNT_NAMESPACE", "make_backend", "orchestrator_namespace"]

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def make_backend(settings: Settings) -> tuple[ContainerRuntime, ImageStore]:
    """(runtime, images) for ``settings.runtime``; ValueError names a setting that is wrong."""
    if settings.runtime == "kubernetes":
        from orchestrator.runtime.kube_objects import parse_pairs
        from orchestrator.runtime.kubernetes import KubernetesRuntime
        from orchestrator.runtime.registry import RegistryImageStore

        runtime = KubernetesRuntime(
            namespace=settings.kube_namespace,
            owner=settings.instance,
            orchestrator_namespace=orchestrator_namespace(settings),
            orchestrator_labels=parse_pairs(
                settings.kube_orchestrator_labels, "SUMMIT_KUBE_ORCHESTRATOR_LABELS"
            ),
            plugin_port=settings.kube_plugin_port,
            host_api_port=settings.host_api_port,
            image_pull_secrets=settings.kube_image_pull_secrets,
            runtime_classes=parse_pairs(
                settings.kube_runtime_classes, "SUMMIT_KUBE_RUNTIME_CLASSES"
            ),
            start_timeout_s=max(settings.startup_timeout_s, 120.0),
        )
        return runtime, RegistryImageStore(insecure_registries=settings.insecure_registries)
    from orchestrator.runtime.docker import DockerRuntime

    docker = DockerRuntime(
        owner=settings.instance,
        sockets_dir=settings.sockets_dir,
        nofile_limit=settings.nofile_limit,
        tmpfs_inodes=settings.tmpfs_inodes,
    )
    return docker, docker


def orchestrator_namespace(
    settings: Settings, *, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE
) -> str:
    """Where the orchestrator pods run: the setting, else ``POD_NAMESPACE`` (the downward API),
    else the namespace of the pod's service account."""
    if settings.kube_orchestrator_namespace:
        return settings.kube_orchestrator_namespace
    from_env = os.environ.get("POD_NAMESPACE", "").strip()
    if from_env:
        return from_env
    try:
        found = service_account_file.read_text().strip()
    except OSError:
        found = ""
    if found:
        return found
    raise ValueError(
        "SUMMIT_KUBE_ORCHESTRATOR_NAMESPACE is not set and the orchestrator does not run in a "
        "pod (no POD_NAMESPACE, no service account): plugin pods would accept calls from no one"
    )
