"""``install`` jobs: a plugin install (build included) run by a worker, its progress on the job.

The payload is the install pipeline's own request model (``services/install.InstallRequest``),
and the job runs the same pipeline as a direct install. The bundle is saved under
``STATE_DIR/uploads`` by the API before the job is queued (a worker process on the same host
reads it there, ``bundle_path``) and removed when the job is over: on success, on a failure
that would repeat, or after its last attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from orchestrator.domain.errors import InvalidInput
from orchestrator.jobs.model import Job
from orchestrator.jobs.queue import JobQueue
from orchestrator.jobs.worker import Handler, job_error
from orchestrator.services.bundles import BundleTooLarge
from orchestrator.services.install import InstallRequest, InstallService

__all__ = ["INSTALL", "install_handler", "save_upload"]

INSTALL = "install"
CHUNK = 1024 * 1024


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


def install_handler(installs: InstallService, queue: JobQueue) -> Handler:
    async def handle(job: Job) -> Any:
        try:
            req = InstallRequest.model_validate(job.payload)
        except ValidationError as exc:
            raise InvalidInput("the job's payload is not valid", code="invalid_job") from exc

        def progress(line: str) -> None:
            with contextlib.suppress(Exception):  # progress is a courtesy, never a failure
                queue.add_progress(job.id, line)

        def run() -> dict[str, Any]:
            view = installs.install(req, progress=progress)
            progress(f"installed {view.id} {view.version} ({view.state})")
            return {"id": view.id, "version": view.version, "state": view.state}

        try:
            result = await asyncio.to_thread(run)
        except BaseException as exc:
            _, retryable = job_error(exc)
            if not retryable or job.attempts >= job.max_attempts:
                _remove(req.bundle_path)
            raise
        _remove(req.bundle_path)
        return result

    return handle


def _remove(path: str | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)
