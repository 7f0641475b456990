"""The install pipeline: fetch, approve, validate, resolve, scan, build or pull, record.

Each step is a method of :class:`InstallService`; ``install`` runs them in order, and the API
(directly, or streaming progress) and the queued install job (``jobs/install.py``) all call
it with the one request model, :class:`InstallRequest`. Recording goes through
``LifecycleService.record_install``: only the lifecycle writes a plugin's state.

:class:`PluginImages` owns a version's image after the install: a built version's source is
kept (packed, reproducible) under ``STATE_DIR/sources``, so an image removed from the host
(``docker image prune -a``) is built again before the plugin starts, and a pulled version is
pulled again by its reference and must still be the image that was installed.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import jsonschema
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema
from summit_sdk.imagebuild import pack_bundle, source_digest

from orchestrator.config import Settings
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, SummitError
from orchestrator.domain.images import check_image_reference, names_registry
from orchestrator.domain.manifest import Manifest, ManifestError, load_manifest_text
from orchestrator.domain.versions import Version, VersionRange
from orchestrator.events.bus import EventBus
from orchestrator.runtime.base import LABEL_MANIFEST, BuildProgress, ImageInfo, ImageStore
from orchestrator.runtime.builder import BuiltImage, ImageBuilder
from orchestrator.security.trust import SignatureRefused, TrustStore
from orchestrator.services.bundles import extract_bundle
from orchestrator.services.plugins import PluginView
from orchestrator.services.scanning import ScanReport, SupplyChainCheck
from orchestrator.store import crud
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.models import Plugin, PluginVersion, utcnow

if TYPE_CHECKING:
    from orchestrator.services.lifecycle import LifecycleService

__all__ = [
    "ImageChanged",
    "ImageMissing",
    "InstallRequest",
    "InstallService",
    "PluginImages",
]

log = logging.getLogger(__name__)

# Operator overrides (``PUT /limits``) that outlive an upgrade or a reload.
OPERATOR_LIMITS = (
    "rate_limit_requests",
    "rate_limit_window_s",
    "concurrency",
    "isolation",
    "quota_policy",
)


def _noop(_: str) -> None:
    pass


class InstallRequest(BaseModel):
    """What to install and the operator's approval: the JSON body of ``POST /v1/plugins``,
    the fields of its multipart form, and the payload of a queued install job."""

    image: str | None = Field(None, min_length=1, max_length=512, description="OCI image reference")
    approved_permissions: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    allow_findings: bool = Field(
        False, description="Install despite blocking scanner findings (admin only; recorded)"
    )
    override_reason: str | None = Field(None, max_length=500)
    signature: dict[str, Any] | None = Field(
        None, description="Detached signature envelope from `summit-plugin sign`"
    )
    # Set by the orchestrator, never taken from a caller: who asks (the route puts the
    # authenticated role here), and where a queued job finds its uploaded bundle.
    principal: SkipJsonSchema[str] = "admin"
    bundle_path: SkipJsonSchema[str | None] = None
    # Who asks as the plugin's history names them (``api/deps.actor``), set by the route too.
    actor: SkipJsonSchema[str] = "system"


class ImageMissing(Conflict):
    code = "image_missing"


class ImageChanged(Conflict):
    code = "image_changed"


# -- the checks an install makes, which enable, reload and config changes make again --------


def check_config(config: Any, settings: Settings) -> None:
    """The limits every config is held to, whichever door it came in by (API, job, CLI):
    at most ``SUMMIT_CONFIG_MAX_BYTES`` of JSON (413), nested at most
    ``jsonlimits.MAX_DEPTH`` levels (422). Its schema is checked per manifest."""
    jsonlimits.check(
        config,
        what="the config",
        max_bytes=settings.config_max_bytes,
        too_large_code="config_too_large",
    )


def validate_config(manifest: Manifest, config: dict[str, Any]) -> None:
    if manifest.config_schema is None:
        return
    validator = jsonschema.Draft202012Validator(manifest.config_schema)
    errors = [
        {"path": "config" + "".join(f"[{p!r}]" for p in e.absolute_path), "message": e.message}
        for e in validator.iter_errors(config)
    ]
    if errors:
        raise InvalidInput(
            f"the config does not match {manifest.id}'s config_schema",
            code="invalid_config",
            details=errors,
        )


def resolve_dependencies(session: Session, manifest: Manifest) -> list[Plugin]:
    """The installed plugins ``manifest`` depends on; 409 listing every one that is missing
    or at a version outside its range."""
    problems = []
    found = []
    for dep in manifest.dependencies:
        plugin = crud.get_plugin(session, plugin_id=dep.id)
        if plugin is None:
            if not dep.optional:
                problems.append({"id": dep.id, "wanted": dep.version, "installed": None})
            continue
        if not VersionRange.parse(dep.version).admits(Version.parse(plugin.version)):
            problems.append({"id": dep.id, "wanted": dep.version, "installed": plugin.version})
            continue
        found.append(plugin)
    if problems:
        raise Conflict(
            f"{manifest.id} has unresolved dependencies",
            code="unresolved_dependencies",
            details=problems,
        )
    return found


def manifest_of(session: Session, plugin: Plugin, version: str | None = None) -> Manifest:
    """The manifest of ``plugin``'s installed ``version`` (default: its current one)."""
    row = crud.get_version(session, plugin_id=plugin.id, version=version or plugin.version)
    if row is None:
        raise NotFound(f"version {version or plugin.version} of {plugin.id} is not installed")
    return Manifest.model_validate(row.manifest)


def dependents_of(session: Session, plugin_id: str, *, active_only: bool) -> list[str]:
    """The installed (or only the ACTIVE) plugins that need ``plugin_id``."""
    out = []
    for other in crud.list_plugins(session):
        if other.id == plugin_id or (active_only and other.state != "ACTIVE"):
            continue
        manifest = manifest_of(session, other)
        if any(d.id == plugin_id and not d.optional for d in manifest.dependencies):
            out.append(other.id)
    return out


def resources_for(
    manifest: Manifest, settings: Settings, current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest's resources within the operator's caps, keeping the operator's own
    per-plugin limits (``set_limits``) across upgrades and reloads."""
    res: dict[str, Any] = manifest.resources.model_dump()
    res["memory_mb"] = min(res["memory_mb"], settings.max_memory_mb)
    res["cpu_percent"] = min(res["cpu_percent"], settings.max_cpu_percent)
    for key in OPERATOR_LIMITS:
        if current and current.get(key) is not None:
            res[key] = current[key]
    return res


# -- images and the sources they were built from ---------------------------------------------


@dataclass(frozen=True)
class VersionImage:
    """What a version row records about its image."""

    image: str
    image_id: str
    source: str  # "bundle" | "image"
    source_digest: str | None


class PluginImages:
    """Build, pull, keep, restore and forget the images of installed versions.

    A built version's source is kept as ``<source_digest>.tar.gz`` (``pack_bundle``: the
    build's own file list, fixed times), beside ``<source_digest>.base``, the base image id
    that digest covers; so before a kept source is built again it is checked against the
    digest the database holds, and a swapped or damaged file is never built.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        images: ImageStore,
        builder: ImageBuilder,
        sources_dir: Path,
        workdir: Path,
        bundle_max_bytes: int,
        events: EventBus | None = None,
    ) -> None:
        self.engine = engine
        self.images = images
        self.builder = builder
        self.sources_dir = sources_dir
        self.workdir = workdir
        self.bundle_max_bytes = bundle_max_bytes
        self.events = events

    def ping(self) -> None:
        self.images.ping()

    def build(self, source: Path, manifest: Manifest, progress: BuildProgress) -> VersionImage:
        built = self.builder.build(source, manifest, progress)
        self._keep_source(source, built)
        return VersionImage(built.tag, built.info.id, "bundle", built.digest)

    def pull(self, ref: str, progress: BuildProgress) -> ImageInfo:
        progress(f"pulling {ref}")
        return self.images.pull_image(ref)

    def _keep_source(self, source: Path, built: BuiltImage) -> None:
        archive, base = self._source_files(built.digest)
        if archive.is_file() and base.is_file():
            return  # the same digest is the same files: kept already
        self.sources_dir.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: a killed orchestrator never leaves half a source here.
        for target, data in (
            (base, built.base_image_id.encode()),
            (archive, pack_bundle(source)),
        ):
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(data)
            os.replace(partial, target)

    def _source_files(self, digest: str) -> tuple[Path, Path]:
        return self.sources_dir / f"{digest}.tar.gz", self.sources_dir / f"{digest}.base"

    def drop_unused_sources(self, digests: set[str]) -> None:
        """Delete the kept sources in ``digests`` that no installed version refers to."""
        if not digests:
            return
        with session_scope(self.engine) as session:
            in_use = crud.source_digests_in_use(session)
        for digest in digests - in_use:
            for path in self._source_files(digest):
                path.unlink(missing_ok=True)

    def forget(self, versions: Sequence[PluginVersion]) -> None:
        """After an uninstall: remove the versions' images and sources no one else uses.

        Built images, and images pulled from a registry, go with the plugin; a local image the
        operator named by hand is theirs to keep."""
        images = {v.image for v in versions if v.source == "bundle" or names_registry(v.image)}
        with session_scope(self.engine) as session:
            in_use = crud.images_in_use(session)
        for image in sorted(images - in_use):
            self.images.remove_image(image)
        self.drop_unused_sources({v.source_digest for v in versions if v.source_digest})

    def sweep(self) -> None:
        """Delete partial sources a killed orchestrator left (start-up, before any install)."""
        if self.sources_dir.is_dir():
            for partial in self.sources_dir.glob(".*.partial"):
                partial.unlink(missing_ok=True)

    # -- restore ---------------------------------------------------------------------------

    def ensure(self, version: PluginVersion) -> str:
        """The image to run ``version`` from, built or pulled again first if it is gone.

        409 ``image_missing`` when it can be neither; 409 ``image_changed`` when its
        reference now names another image than the one that was installed."""
        ref = version.image_id or version.image
        if self.images.image(ref) is not None:
            return ref
        label = f"{version.plugin_id} {version.version}"
        log.warning("the image of %s (%s) is gone from this host", label, ref)

        def progress(line: str) -> None:
            log.info("%s: %s", label, line)

        if version.source == "bundle":
            built = self._rebuild(version, progress)
            how, image, image_id = "rebuilt", built.tag, built.info.id
        else:
            info = self._pull_again(version, progress)
            how, image, image_id = "pulled", version.image, info.id
        with session_scope(self.engine) as session:
            if (image, image_id) != (version.image, version.image_id):
                crud.set_version_image(
                    session,
                    plugin_id=version.plugin_id,
                    version=version.version,
                    image=image,
                    image_id=image_id,
                )
            if self.events is not None:
                self.events.record(
                    session,
                    "plugin.image_restored",
                    source="orchestrator",
                    subject=version.plugin_id,
                    payload={
                        "plugin": version.plugin_id,
                        "version": version.version,
                        "how": how,
                        "image": image,
                        "image_id": image_id,
                    },
                )
        log.info("%s: image %s again (%s)", label, how, image_id)
        return image_id

    def _missing(self, version: PluginVersion, why: str) -> ImageMissing:
        return ImageMissing(
            f"the image of {version.plugin_id} {version.version} was removed from this host "
            f"and cannot be rebuilt or pulled ({why}); install the plugin again",
            details={"plugin": version.plugin_id, "version": version.version, "reason": why},
        )

    def _rebuild(self, version: PluginVersion, progress: BuildProgress) -> BuiltImage:
        digest = version.source_digest
        if not digest:
            raise self._missing(version, "its source was not kept")
        archive, base = self._source_files(digest)
        if not archive.is_file() or not base.is_file():
            raise self._missing(version, "its source was not kept")
        progress(f"rebuilding from the source kept at install ({digest[:16]})")
        try:
            with archive.open("rb") as stream:
                bundle = extract_bundle(
                    stream, max_bytes=self.bundle_max_bytes, workdir=self.workdir
                )
        except SummitError as exc:
            raise self._missing(version, f"its kept source is unreadable: {exc.message}") from exc
        try:
            if source_digest(bundle.root, base_image_id=base.read_text().strip()) != digest:
                raise self._missing(version, "its kept source does not match its digest")
            return self.builder.build(
                bundle.root, Manifest.model_validate(version.manifest), progress
            )
        finally:
            shutil.rmtree(bundle.root, ignore_errors=True)

    def _pull_again(self, version: PluginVersion, progress: BuildProgress) -> ImageInfo:
        if not names_registry(version.image):
            raise self._missing(version, f"{version.image} names no registry")
        try:
            info = self.pull(version.image, progress)
        except InvalidInput as exc:  # image_not_found: the registry has it no more
            raise self._missing(version, exc.message) from exc
        if version.image_id and info.id != version.image_id:
            raise ImageChanged(
                f"{version.image} now names another image ({info.id[:19]}) than the one "
                f"{version.plugin_id} {version.version} was installed from "
                f"({version.image_id[:19]}); it is not run: install the plugin again to take it",
                details={"image": version.image, "installed": version.image_id, "pulled": info.id},
            )
        return info


# -- the pipeline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A fetched plugin: its manifest, and its unpacked source or its pulled image."""

    manifest: Manifest
    source: Path | None = None
    image: ImageInfo | None = None
    ref: str | None = None


class InstallService:
    def __init__(
        self,
        *,
        engine: Engine,
        lifecycle: LifecycleService,
        images: PluginImages,
        supply_chain: SupplyChainCheck,
        trust: TrustStore,
        settings: Settings,
    ) -> None:
        self.engine = engine
        self.lifecycle = lifecycle
        self.images = images
        self.supply_chain = supply_chain
        self.trust = trust
        self.settings = settings

    def install(
        self,
        req: InstallRequest,
        *,
        bundle: BinaryIO | None = None,
        progress: BuildProgress = _noop,
    ) -> PluginView:
        """Every step in turn; the first refusal is the answer (so unapproved permissions are
        reported before a config error, and both before anything is scanned or built)."""
        self.check(req)
        self.images.ping()  # Docker down: 503 before anything is read or written
        with self.fetch(req, bundle, progress) as fetched:
            manifest = fetched.manifest
            self.approve(manifest, req)
            self.validate(manifest, req)
            self.resolve(manifest)
            report = self.scan(fetched, req, progress)
            image = self.build_or_pull(fetched, progress)
        return self.record(manifest, req, image, report)

    def sweep_workdirs(self) -> None:
        """Delete unpacked bundles, build contexts, extracted images and partial sources that a
        killed orchestrator left behind. Called at start-up, when no install can be in progress."""
        for name in ("bundles", "build", "image-scan"):
            folder = self.settings.state_dir / name
            if folder.is_dir():
                for child in folder.iterdir():
                    shutil.rmtree(child, ignore_errors=True)
        self.images.sweep()

    def check(self, req: InstallRequest) -> None:
        """What can be refused before anything is fetched (also before an install is queued):
        the config's limits and a malformed image reference, the caller's mistake (422), not
        the runtime's (502)."""
        check_config(req.config, self.settings)
        if req.image is not None:
            check_image_reference(req.image)
        elif self.settings.runtime == "kubernetes":
            raise Conflict(
                "plugins on Kubernetes run from images in a registry; this orchestrator "
                "builds no source bundles. Build and push the plugin with `summit-plugin "
                "publish`, then install it by image reference",
                code="source_install_unsupported",
                details={"runtime": "kubernetes", "hint": "summit-plugin publish"},
            )

    @contextmanager
    def fetch(
        self, req: InstallRequest, bundle: BinaryIO | None, progress: BuildProgress
    ) -> Iterator[Fetched]:
        """Unpack the bundle (removed when the block ends) or pull the image; its manifest."""
        if (bundle is None and req.bundle_path is None) == (req.image is None):
            raise InvalidInput("give exactly one of a bundle or an image reference")
        if req.image is not None:
            info = self.images.pull(req.image, progress)
            raw = info.labels.get(LABEL_MANIFEST)
            if not raw:
                raise InvalidInput(
                    f"image {req.image!r} carries no plugin manifest (label {LABEL_MANIFEST})",
                    code="not_a_plugin_image",
                )
            yield Fetched(load_manifest_text(raw), image=info, ref=req.image)
            return
        work = self.settings.state_dir / "bundles"
        # Refuses links, header bombs and a bad plugin.yaml before writing anything.
        if bundle is not None:
            unpacked = extract_bundle(
                bundle, max_bytes=self.settings.bundle_max_bytes, workdir=work
            )
        else:
            assert req.bundle_path is not None
            with open(req.bundle_path, "rb") as stream:
                unpacked = extract_bundle(
                    stream, max_bytes=self.settings.bundle_max_bytes, workdir=work
                )
        try:
            if unpacked.manifest.runtime.image:
                raise ManifestError(
                    "a source bundle must build from a base, not name a prebuilt image",
                    details=[{"path": "runtime.image", "message": "not allowed in a bundle"}],
                )
            yield Fetched(unpacked.manifest, source=unpacked.root)
        finally:
            shutil.rmtree(unpacked.root, ignore_errors=True)

    def approve(self, manifest: Manifest, req: InstallRequest) -> None:
        """The caller's ``approved_permissions`` must cover every requested permission."""
        requested = {p.value for p in manifest.permissions}
        missing = sorted(requested - set(req.approved_permissions))
        if missing:
            raise Conflict(
                f"{manifest.id} requests permissions that were not approved: {', '.join(missing)}",
                code="permissions_not_approved",
                details={"missing": missing, "requested": sorted(requested)},
            )

    def validate(self, manifest: Manifest, req: InstallRequest) -> None:
        """The config against the manifest's schema; this version not installed already."""
        validate_config(manifest, req.config)
        with session_scope(self.engine) as session:
            existing = crud.get_plugin(session, plugin_id=manifest.id)
            if existing is not None and crud.get_version(
                session, plugin_id=manifest.id, version=manifest.version
            ):
                raise Conflict(
                    f"{manifest.id} {manifest.version} is already installed",
                    code="already_installed",
                    details={"state": existing.state},
                )

    def resolve(self, manifest: Manifest) -> None:
        with session_scope(self.engine) as session:
            resolve_dependencies(session, manifest)

    def scan(self, fetched: Fetched, req: InstallRequest, progress: BuildProgress) -> ScanReport:
        """Signature (checked whenever one is given), then the supply-chain check, judged."""
        manifest = fetched.manifest
        progress(f"validated {manifest.id} {manifest.version}")
        if fetched.source is None:
            # An image is scanned by what it holds: its filesystem is read, never run.
            assert fetched.image is not None
            signed = self._check_signature(manifest, req, image_digest=fetched.image.id)
            progress(f"reading {fetched.ref} to scan it")
            report = self.supply_chain.inspect_image(self.images.images, fetched.image, manifest)
        else:
            signed = self._check_signature(manifest, req, bundle_root=fetched.source)
            report = self.supply_chain.inspect_source(fetched.source, manifest)
        report.signature = signed
        self._judge(manifest, req, report)
        progress(
            "scanned: " + ", ".join(f"{n} {s}" for s, n in report.summary.items() if n)
            if any(report.summary.values())
            else "scanned: no findings"
        )
        return report

    def build_or_pull(self, fetched: Fetched, progress: BuildProgress) -> VersionImage:
        """Build the bundle (content-addressed: unchanged source, no rebuild; its source is
        kept to build it again), or take the image the fetch pulled."""
        if fetched.source is not None:
            return self.images.build(fetched.source, fetched.manifest, progress)
        assert fetched.image is not None and fetched.ref is not None
        return VersionImage(fetched.ref, fetched.image.id, "image", None)

    def record(
        self, manifest: Manifest, req: InstallRequest, image: VersionImage, report: ScanReport
    ) -> PluginView:
        try:
            return self.lifecycle.record_install(
                manifest, config=req.config, image=image, scan=report.to_json(), actor=req.actor
            )
        except BaseException:
            # Another replica recorded this version first: its source is kept only if used.
            if image.source_digest:
                self.images.drop_unused_sources({image.source_digest})
            raise

    def _check_signature(
        self,
        manifest: Manifest,
        req: InstallRequest,
        *,
        image_digest: str | None = None,
        bundle_root: Path | None = None,
    ) -> dict[str, Any] | None:
        """Verify a given signature (always) and require one when the operator says so."""
        if req.signature is None:
            if self.settings.require_signed:
                raise SignatureRefused(
                    f"{manifest.id} {manifest.version} is not signed and SUMMIT_REQUIRE_SIGNED "
                    "is on",
                    code="signature_required",
                )
            return None
        document = self.trust.verify(
            req.signature, manifest, image_digest=image_digest, bundle_root=bundle_root
        )
        # Kept exactly as signed, so anyone can verify it again later.
        return {"key_id": document["key_id"], "verified_at": utcnow().isoformat(), **req.signature}

    def _judge(self, manifest: Manifest, req: InstallRequest, report: ScanReport) -> None:
        """Apply the install policy to the scan: refuse, or record an admin's override."""
        if not report.blocking:
            return
        if not req.allow_findings:
            raise Conflict(
                f"{manifest.id} {manifest.version} has {len(report.blocking)} finding(s) at or "
                f"above {report.fail_on}; an admin may install it anyway with allow_findings",
                code="scan_refused",
                details={"blocking": report.blocking, "summary": report.summary},
            )
        if req.principal != "admin":
            raise Forbidden(
                "only an admin may install despite scanner findings",
                code="forbidden",
                details={"role": req.principal, "required": "admin"},
            )
        report.override = {
            "by": req.principal,
            "reason": req.override_reason or "",
            "at": utcnow().isoformat(),
        }
        with session_scope(self.engine) as session:
            crud.add_audit(
                session,
                actor=req.principal,
                action="install.override_findings",
                outcome="allowed",
                detail=f"{manifest.id} {manifest.version}: {len(report.blocking)} blocking "
                f"finding(s); reason: {req.override_reason or '(none given)'}",
            )
