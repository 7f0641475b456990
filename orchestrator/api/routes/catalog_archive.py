"""``/v1/catalog/export`` and ``/v1/catalog/import``: the catalog as one signed file, for
sites without a route to the registry the catalog came from (admin only: neither path matches
a rule of ``security/access.py``, and unmatched requests need the admin role).

The export is signed with a private key the caller sends in the request body (PEM, as
``summit-plugin keygen`` writes it). The orchestrator holds no private keys (its trust store
has public keys only), and keeping one would make every admin token a signing key; a key sent
per export is held in memory for that request only, never stored, logged or echoed in an
error. Send it over TLS, as the admin token itself is. The CLI reads it from a file.

The import takes the archive as the raw request body (``Content-Type: application/x-tar``,
target registry in ``?registry=``), written to disk as it arrives and refused past the cap,
or as a multipart upload (field ``archive``, and ``registry``), which Starlette spools to disk
before the cap can be checked (a declared ``Content-Length`` over the cap is refused first).

Thin: the rules are ``catalog/archive.py``'s.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, SecretStr
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from orchestrator.catalog.archive import (
    ExportResult,
    ImportReport,
    RegistryMirror,
    export_catalog,
    import_catalog,
    load_signing_key,
)
from orchestrator.config import Settings
from orchestrator.domain.errors import InvalidInput, TooLarge

from ..deps import CallerDep, SettingsDep
from .catalog import CatalogDep, rate_limited

__all__ = ["router"]

TAR = "application/x-tar"
# Time to read one image from a registry, or to push one: a registry that is merely slow is
# still given the time a large layer needs.
REGISTRY_TIMEOUT_S = 300.0
STALE_S = 24 * 3600

router = APIRouter(prefix="/v1/catalog", tags=["catalog"], dependencies=[Depends(rate_limited)])


class ExportRequest(BaseModel):
    ids: list[str] | None = Field(
        None, max_length=1000, description="Plugin ids to export (default: every plugin)"
    )
    include_yanked: bool = Field(
        True, description="Also yanked versions (they stay yanked where they are imported)"
    )
    key: SecretStr = Field(
        description="The Ed25519 private key that signs the archive: unencrypted PEM, as "
        "`summit-plugin keygen` writes it; used for this request only, never stored",
        max_length=16384,
    )


def _max_bytes(settings: Settings) -> int:
    # SUMMIT_CATALOG_ARCHIVE_MAX_BYTES once config.py has it; the module's default until then.
    return int(settings.catalog_archive_max_bytes)


def _workdir(settings: Settings) -> Path:
    folder = settings.state_dir / "catalog-archives"
    folder.mkdir(parents=True, exist_ok=True)
    # A download cut short (the client gone) never runs its clean-up: swept a day later.
    cutoff = time.time() - STALE_S
    for old in folder.glob("*.tar"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    return folder


def _registry(settings: Settings) -> RegistryMirror:
    return RegistryMirror(
        insecure_registries=settings.insecure_registries, timeout_s=REGISTRY_TIMEOUT_S
    )


@router.post(
    "/export",
    response_class=FileResponse,
    responses={200: {"content": {TAR: {}}, "description": "The signed archive"}},
)
async def export_archive(
    req: ExportRequest, catalog: CatalogDep, settings: SettingsDep, caller: CallerDep
) -> FileResponse:
    """The catalog (or the plugins of ``ids``) as a signed archive: an OCI image layout with
    every version's image, ``summit-catalog.json`` and its signature ``summit-catalog.sig``.
    Answered once the whole file is written; headers name the signing key and the index's
    sha256."""
    key = load_signing_key(req.key.get_secret_value())
    path = _workdir(settings) / f"export-{secrets.token_hex(8)}.tar"

    def run() -> ExportResult:
        registry = _registry(settings)
        try:
            return export_catalog(
                catalog.engine,
                path,
                key=key,
                registry=registry,
                plugin_ids=req.ids,
                include_yanked=req.include_yanked,
            )
        finally:
            registry.close()

    try:
        result = await run_in_threadpool(run)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FileResponse(
        path,
        media_type=TAR,
        filename=f"summit-catalog-{result.index_sha256[:12]}.tar",
        headers={
            "X-Summit-Key-Id": result.key_id,
            "X-Summit-Index-Sha256": result.index_sha256,
            "X-Summit-Versions": str(result.versions),
        },
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


_IMPORT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            TAR: {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["archive"],
                    "properties": {
                        "archive": {"type": "string", "format": "binary"},
                        "registry": {"type": "string", "description": "host[:port][/path]"},
                    },
                }
            },
        },
    }
}


@router.post("/import", openapi_extra=_IMPORT_DOC)
async def import_archive(
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
    caller: CallerDep,
    registry: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Where the images go: host[:port][/path], e.g. mirror.local/summit",
        ),
    ] = None,
) -> dict[str, Any]:
    """Import a signed archive: its images are pushed under ``registry`` and its versions
    published here. ``{imported, skipped, conflicts, updated, blobs}``; importing the same
    archive again imports nothing."""
    cap = _max_bytes(settings)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise TooLarge(
            f"the archive is over the limit of {cap} bytes",
            code="archive_too_large",
            details={"limit_bytes": cap},
        )
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: UploadFile | None = None
    path: Path | None = None
    try:
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=4)
            field = form.get("archive")
            if field is None or isinstance(field, str):
                raise InvalidInput(
                    "the multipart body needs a file field 'archive'", code="invalid_request"
                )
            upload = field
            text = form.get("registry")
            registry = text if isinstance(text, str) and text else registry
            source: Any = upload.file
        elif ctype in (TAR, "application/octet-stream"):
            path = _workdir(settings) / f"import-{secrets.token_hex(8)}.tar"
            await _receive(request, path, cap)
            source = path
        else:
            raise InvalidInput(
                f"send the archive as {TAR} (registry in ?registry=) or as multipart/form-data "
                "with a file field 'archive'",
                code="unsupported_media_type",
            )
        if not registry:
            raise InvalidInput(
                "say where the images go: registry=host[:port][/path]", code="registry_required"
            )
        target = registry

        def run() -> ImportReport:
            mirror = _registry(settings)
            try:
                return import_catalog(
                    catalog.engine,
                    source,
                    registry=mirror,
                    target=target,
                    actor=caller.actor,
                    max_bytes=cap,
                )
            finally:
                mirror.close()

        report = await run_in_threadpool(run)
    finally:
        if upload is not None:
            await upload.close()
        if path is not None:
            path.unlink(missing_ok=True)
    if report.changed:
        catalog.cache.bump()
    return report.to_json()


async def _receive(request: Request, path: Path, cap: int) -> None:
    """The request body to ``path``, as it arrives, refused past ``cap`` bytes."""
    handle = await run_in_threadpool(path.open, "wb")
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise TooLarge(
                    f"the archive is over the limit of {cap} bytes",
                    code="archive_too_large",
                    details={"limit_bytes": cap},
                )
            await run_in_threadpool(handle.write, chunk)
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    handle.close()
