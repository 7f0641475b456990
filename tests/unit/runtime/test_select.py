"""``make_backend`` builds the runtime the settings name, with the settings it needs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.runtime.select import make_backend, orchestrator_namespace


def test_docker_is_the_default_and_plays_both_roles(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, instance="inst-a", nofile_limit=512)
    runtime, images = make_backend(settings)
    assert isinstance(runtime, DockerRuntime) and images is runtime
    assert runtime.owner == "inst-a"
    assert runtime.sockets_dir == (tmp_path / "run").resolve()
    assert runtime.nofile_limit == 512


def test_kubernetes_gets_pods_and_a_registry_store(tmp_path: Path) -> None:
    from orchestrator.runtime.kubernetes import KubernetesRuntime
    from orchestrator.runtime.registry import RegistryImageStore

    settings = Settings(
        state_dir=tmp_path,
        runtime="kubernetes",
        instance="inst-b",
        kube_namespace="plugins",
        kube_orchestrator_namespace="summit-system",
        kube_orchestrator_labels=["app=summit", "tier=api"],
        kube_runtime_classes=["gvisor=gvisor-rc", "kata=kata-qemu"],
        kube_image_pull_secrets=["regcred"],
        kube_plugin_port=9090,
        host_api_port=8701,
        insecure_registries=["reg.local:5000"],
    )
    runtime, images = make_backend(settings)
    assert isinstance(runtime, KubernetesRuntime)
    assert isinstance(images, RegistryImageStore)
    assert (runtime.namespace, runtime.owner) == ("plugins", "inst-b")
    assert runtime.orchestrator_namespace == "summit-system"
    assert runtime.orchestrator_labels == {"app": "summit", "tier": "api"}
    assert runtime.runtime_classes == {"gvisor": "gvisor-rc", "kata": "kata-qemu"}
    assert runtime.image_pull_secrets == ("regcred",)
    assert (runtime.plugin_port, runtime.host_api_port) == (9090, 8701)
    assert images.insecure == frozenset({"reg.local:5000"})


def test_a_bad_pair_names_its_setting(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        runtime="kubernetes",
        kube_orchestrator_namespace="s",
        kube_runtime_classes=["gvisor"],
    )
    with pytest.raises(ValueError, match="SUMMIT_KUBE_RUNTIME_CLASSES"):
        make_backend(settings)


def test_the_orchestrator_namespace_comes_from_the_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    missing = tmp_path / "absent"
    with pytest.raises(ValueError, match="SUMMIT_KUBE_ORCHESTRATOR_NAMESPACE"):
        orchestrator_namespace(Settings(), service_account_file=missing)
    account = tmp_path / "namespace"
    account.write_text("from-account\n")
    assert orchestrator_namespace(Settings(), service_account_file=account) == "from-account"
    monkeypatch.setenv("POD_NAMESPACE", "from-env")
    assert orchestrator_namespace(Settings(), service_account_file=account) == "from-env"
    chosen = Settings(kube_orchestrator_namespace="chosen")
    assert orchestrator_namespace(chosen, service_account_file=account) == "chosen"


def test_the_docker_backend_does_not_import_the_kubernetes_client(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from orchestrator.config import Settings\n"
        "from orchestrator.runtime.select import make_backend\n"
        f"make_backend(Settings(state_dir=Path({str(tmp_path)!r})))\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
