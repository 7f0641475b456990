"""``install`` jobs: a plugin install (build included) run by a worker, its progress on the job.

The bundle is saved under ``STATE_DIR/uploads`` by the API before the job is queued (a worker
process on the same host reads it there) and removed when the job is over: on success, on a
failure that would repeat, or after its last attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, Field, ValidationError

from orchestrator.domain.errors import InvalidInput
from orchestrator.jobs.model import Job
from orchestrator.jobs.queue import JobQueue
from orchestrator.jobs.worker import Handler, job_error
from orchestrator.services.bundles import BundleTooLarge
from orchestrator.services.lifecycle import InstallRequest, LifecycleService

__all__ = ["INSTALL", "InstallPayload", "install_handler", "save_upload"]

INSTALL = "install"
CHUNK = 1024 * 1024


class InstallPayload(BaseModel):
    bundle_path: str | None = None
    image: str | None = None
    approved_permissions: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    allow_findings: bool = False
    override_reason: str | None = None
    principal: str = "admin"
    signature: dict[str, Any] | None = None


def save_upload(stream: BinaryIO, uploads: Path, *, max_bytes: int) -> Path:
    """Copy an uploaded bundle to ``uploads`` (at most ``max_bytes``) for a worker to read.

    Only copied: the worker unpacks it with ``extract_bundle``, which checks every member and
    the manifest before writing anything, as a direct install does.
    """
    uploads.mkdir(parents=True, exist_ok=True)
    path = uploads / f"{secrets.token_hex(12)}.tar.gz"
    size = 0
    try:
        with path.open("wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise BundleTooLarge(
                        f"the bundle is larger than {max_bytes} bytes",
                        details={"limit_bytes": max_bytes},
                    )
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def install_handler(lifecycle: LifecycleService, queue: JobQueue) -> Handler:
    async def handle(job: Job) -> Any:
        try:
            p = InstallPayload.model_validate(job.payload)
        except ValidationError as exc:
            raise InvalidInput("the job's payload is not valid", code="invalid_job") from exc

        def progress(line: str) -> None:
            with contextlib.suppress(Exception):  # progress is a courtesy, never a failure
                queue.add_progress(job.id, line)

        def request(bundle: BinaryIO | None) -> InstallRequest:
            return InstallRequest(
                approved_permissions=p.approved_permissions,
                config=p.config,
                bundle=bundle,
                image=p.image,
                allow_findings=p.allow_findings,
                override_reason=p.override_reason,
                principal=p.principal,
                signature=p.signature,
            )

        def run() -> dict[str, Any]:
            if p.bundle_path is None:
                plugin = lifecycle.install(request(None), progress=progress)
            else:
                with open(p.bundle_path, "rb") as bundle:
                    plugin = lifecycle.install(request(bundle), progress=progress)
            progress(f"installed {plugin.id} {plugin.version} ({plugin.state})")
            return {"id": plugin.id, "version": plugin.version, "state": plugin.state}

        try:
            result = await asyncio.to_thread(run)
        except BaseException as exc:
            _, retryable = job_error(exc)
            if not retryable or job.attempts >= job.max_attempts:
                _remove(p.bundle_path)
            raise
        _remove(p.bundle_path)
        return result

    return handle


def _remove(path: str | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)
