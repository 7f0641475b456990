"""The install pipeline's one request model, shared by the API, the service and the job, and
the steps' refusals against FakeRuntime."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.errors import Conflict, InvalidInput
from orchestrator.jobs import MemoryJobQueue
from orchestrator.jobs.install import install_handler
from orchestrator.services.bundles import pack_directory
from orchestrator.services.install import InstallRequest
from tests.fixtures.plugins import make_plugin

from .conftest import Services

PID = "com.summit-tests.probe"


def test_what_the_orchestrator_sets_is_not_in_the_api_schema() -> None:
    properties = InstallRequest.model_json_schema()["properties"]
    assert "image" in properties and "approved_permissions" in properties
    assert "principal" not in properties and "bundle_path" not in properties


def test_a_queued_install_runs_the_same_pipeline_from_its_payload(
    services: Services, tmp_path: Path
) -> None:
    upload = tmp_path / "upload.tar.gz"
    upload.write_bytes(pack_directory(make_plugin(tmp_path / "p", id=PID)))
    # What the route queues: the request itself, with where the upload was saved.
    payload = InstallRequest(bundle_path=str(upload), principal="operator").model_dump()
    queue = MemoryJobQueue()
    job = queue.submit("install", payload, max_attempts=1)
    claimed = queue.claim("test-worker", timeout_s=1)
    assert claimed is not None and claimed.id == job.id

    async def run_job() -> Any:
        return await install_handler(services.installs, queue)(claimed)

    result = asyncio.run(run_job())

    assert result == {"id": PID, "version": "1.0.0", "state": "LOADED"}
    assert not upload.exists()  # the upload is removed once the job is over
    done = queue.get(job.id)
    assert done is not None and f"installed {PID} 1.0.0 (LOADED)" in done.progress


def test_exactly_one_of_a_bundle_or_an_image(services: Services, tmp_path: Path) -> None:
    bundle = io.BytesIO(pack_directory(make_plugin(tmp_path / "p", id=PID)))
    with pytest.raises(InvalidInput, match="exactly one"):
        services.installs.install(InstallRequest(image="registry.example/p:1"), bundle=bundle)
    with pytest.raises(InvalidInput, match="exactly one"):
        services.installs.install(InstallRequest())


def test_unapproved_permissions_are_refused_before_anything_is_built(
    services: Services, tmp_path: Path
) -> None:
    folder = make_plugin(tmp_path / "p", id=PID, permissions=["storage"])
    with pytest.raises(Conflict) as refused:
        services.installs.install(InstallRequest(), bundle=io.BytesIO(pack_directory(folder)))
    assert refused.value.code == "permissions_not_approved"
    assert refused.value.details == {"missing": ["storage"], "requested": ["storage"]}
    assert services.runtime.builds == []
    assert not (services.settings.state_dir / "sources").exists()


def test_an_installed_version_is_not_installed_twice(services: Services) -> None:
    services.install(PID)
    with pytest.raises(Conflict) as refused:
        services.install(PID)
    assert refused.value.code == "already_installed"
    assert len(services.runtime.builds) == 1
