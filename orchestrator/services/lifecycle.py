"""Plugin lifecycle: the only code that changes a plugin's state.

Every change goes through ``_transition``, which checks the edge against the state machine in
``domain/lifecycle.py`` and stores the transition with its time and reason in the same
transaction. Operations on one plugin are serialised by a per-plugin lock; the container
engine is reached only through the ``ContainerRuntime`` protocol.

Crash safety: state is written *before* the side effect it announces (INITIALIZING before a
container is created, UNLOADING before one is stopped), and a container is recorded only once
it is healthy. ``reconcile`` at start-up finishes or rolls back whatever a killed orchestrator
left half-done, so no container, socket folder or row is orphaned.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import jsonschema
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from orchestrator.broker.client import PluginClient
from orchestrator.broker.pool import Broker, Route
from orchestrator.config import Settings
from orchestrator.domain import jsonlimits
from orchestrator.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    SummitError,
)
from orchestrator.domain.images import check_image_reference
from orchestrator.domain.lifecycle import PluginState, allowed_actions, next_state
from orchestrator.domain.manifest import Manifest, ManifestError, Permission, load_manifest_text
from orchestrator.domain.versions import Version, VersionRange
from orchestrator.events.bus import EventBus
from orchestrator.runtime.base import (
    LABEL_MANIFEST,
    BuildProgress,
    ContainerRuntime,
    ContainerSpec,
    ContainerStatus,
    RuntimeEvent,
)
from orchestrator.runtime.builder import ImageBuilder
from orchestrator.security.trust import SignatureRefused, TrustStore
from orchestrator.services.bundles import extract_bundle
from orchestrator.services.scanning import ScanReport, SupplyChainCheck
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from orchestrator.store.models import Container, Plugin, PluginVersion, utcnow
from orchestrator.store.models import ScanReport as ScanReportRow

log = logging.getLogger(__name__)

# The event each lifecycle action emits (``plugin.failed`` carries the reason).
LIFECYCLE_EVENTS = {
    "install": "plugin.installed",
    "enable": "plugin.enabling",
    "initialized": "plugin.enabled",
    "reload": "plugin.reloaded",
    "fail": "plugin.failed",
    "disable": "plugin.disabling",
    "destroy": "plugin.disabled",
    "uninstall": "plugin.uninstalled",
}
S = PluginState

LOG_TAIL_ON_FAILURE = 20
OPERATOR_LIMITS = ("rate_limit_requests", "rate_limit_window_s", "concurrency")


def _noop(_: str) -> None:
    pass


class StartFailed(SummitError):
    """The plugin's container did not become healthy and initialized; it was removed."""

    status_code = 502
    code = "start_failed"


@dataclass(frozen=True)
class InstallRequest:
    """What to install: a bundle stream or an image reference, plus the operator's approval."""

    approved_permissions: list[str]
    config: dict[str, Any]
    bundle: BinaryIO | None = None
    image: str | None = None
    # An admin may install despite blocking scanner findings; who and why is kept.
    allow_findings: bool = False
    override_reason: str | None = None
    principal: str = "admin"
    # A detached ``summit.plugin.signature/v1`` envelope (``summit-plugin sign``).
    signature: dict[str, Any] | None = None


class HostAccess(Protocol):
    """The host API as the lifecycle sees it: a listener and a token per container
    (``orchestrator.api.host.HostGateway``)."""

    def open(self, plugin_id: str, container_id: str, endpoint: str) -> tuple[str, str] | None:
        """Start serving the container; (host URL inside it, its token), or None."""

    def reattach(self, plugin_id: str, endpoint: str) -> None: ...

    def close(self, container_id: str, endpoint: str) -> None:
        """Stop serving the container and revoke its token."""

    def revoke_plugin(self, plugin_id: str) -> None: ...


class LifecycleService:
    def __init__(
        self,
        *,
        engine: Engine,
        runtime: ContainerRuntime,
        broker: Broker,
        settings: Settings,
        host: HostAccess | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        self.broker = broker
        self.settings = settings
        self.host = host
        self.events = events
        self.supply_chain = SupplyChainCheck(settings)
        self.trust = TrustStore(engine)
        self.builder = ImageBuilder(
            runtime, base_image=settings.base_image, workdir=settings.state_dir / "build"
        )
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._restart_timers: dict[str, threading.Timer] = {}
        self._health_failures: dict[str, int] = {}
        self._stopping = threading.Event()

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self, plugin_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(plugin_id, threading.RLock())
        with lock:
            yield

    def _session(self) -> Any:
        return session_scope(self.engine)

    def _get(self, session: Session, plugin_id: str) -> Plugin:
        plugin = crud.get_plugin(session, plugin_id=plugin_id)
        if plugin is None:
            raise NotFound(f"plugin {plugin_id!r} is not installed", code="plugin_not_found")
        return plugin

    def _transition(
        self, session: Session, plugin: Plugin, action: str, reason: str | None = None
    ) -> None:
        current = S(plugin.state)
        target = next_state(current, action)
        if target is None:
            raise Conflict(
                f"cannot {action} plugin {plugin.id} while it is {current.value}",
                code="illegal_transition",
                details={
                    "state": current.value,
                    "action": action,
                    "allowed": allowed_actions(current),
                },
            )
        now = utcnow()
        crud.add_transition(
            session,
            plugin_id=plugin.id,
            from_state=current.value,
            to_state=target.value,
            action=action,
            reason=reason,
            at=now,
        )
        plugin.state = target.value
        plugin.state_reason = reason
        plugin.updated_at = now
        session.add(plugin)
        log.info("plugin %s: %s -> %s (%s)", plugin.id, current.value, target.value, reason)
        if self.events is not None:
            # In the same transaction as the state change: both commit, or neither.
            self.events.record(
                session,
                LIFECYCLE_EVENTS[action],
                source="orchestrator",
                subject=plugin.id,
                payload={
                    "plugin": plugin.id,
                    "version": plugin.version,
                    "from": current.value,
                    "to": target.value,
                    "reason": reason,
                },
            )

    def _set_state(self, plugin_id: str, action: str, reason: str | None = None) -> Plugin:
        with self._session() as session:
            plugin = self._get(session, plugin_id)
            self._transition(session, plugin, action, reason)
            return plugin

    def manifest_of(self, session: Session, plugin: Plugin, version: str | None = None) -> Manifest:
        row = crud.get_version(session, plugin_id=plugin.id, version=version or plugin.version)
        if row is None:
            raise NotFound(f"version {version or plugin.version} of {plugin.id} is not installed")
        return Manifest.model_validate(row.manifest)

    # -- install -----------------------------------------------------------------------------

    def install(self, req: InstallRequest, *, progress: BuildProgress = _noop) -> Plugin:
        if (req.bundle is None) == (req.image is None):
            raise InvalidInput("give exactly one of a bundle or an image reference")
        self.check_request(req)
        self.runtime.ping()
        if req.bundle is not None:
            return self._install_bundle(req, req.bundle, progress)
        assert req.image is not None
        return self._install_image(req, req.image, progress)

    def _install_bundle(
        self, req: InstallRequest, stream: BinaryIO, progress: BuildProgress
    ) -> Plugin:
        work = self.settings.state_dir / "bundles"
        # Refuses links, header bombs and a bad plugin.yaml before writing anything.
        bundle = extract_bundle(stream, max_bytes=self.settings.bundle_max_bytes, workdir=work)
        source, manifest = bundle.root, bundle.manifest
        try:
            if manifest.runtime.image:
                raise ManifestError(
                    "a source bundle must build from a base, not name a prebuilt image",
                    details=[{"path": "runtime.image", "message": "not allowed in a bundle"}],
                )
            self._preflight(manifest, req)
            progress(f"validated {manifest.id} {manifest.version}")
            signed = self._check_signature(manifest, req, bundle_root=source)
            report = self.supply_chain.inspect_source(source, manifest)
            report.signature = signed
            self._judge(manifest, req, report)
            progress(
                "scanned: " + ", ".join(f"{n} {s}" for s, n in report.summary.items() if n)
                if any(report.summary.values())
                else "scanned: no findings"
            )
            built = self.builder.build(source, manifest, progress)
        finally:
            shutil.rmtree(source, ignore_errors=True)
        return self._record_install(
            manifest,
            req,
            image=built.tag,
            image_id=built.info.id,
            source="bundle",
            source_digest=built.digest,
            scan=report.to_json(),
        )

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
        with self._session() as session:
            crud.add_audit(
                session,
                actor=req.principal,
                action="install.override_findings",
                outcome="allowed",
                detail=f"{manifest.id} {manifest.version}: {len(report.blocking)} blocking "
                f"finding(s); reason: {req.override_reason or '(none given)'}",
            )

    def _install_image(self, req: InstallRequest, ref: str, progress: BuildProgress) -> Plugin:
        progress(f"pulling {ref}")
        info = self.runtime.pull_image(ref)
        raw = info.labels.get(LABEL_MANIFEST)
        if not raw:
            raise InvalidInput(
                f"image {ref!r} carries no plugin manifest (label {LABEL_MANIFEST})",
                code="not_a_plugin_image",
            )
        manifest = load_manifest_text(raw)
        self._preflight(manifest, req)
        report = self.supply_chain.inspect_image()
        report.signature = self._check_signature(manifest, req, image_digest=info.id)
        return self._record_install(
            manifest,
            req,
            image=ref,
            image_id=info.id,
            source="image",
            source_digest=None,
            scan=report.to_json(),
        )

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

    def _preflight(self, manifest: Manifest, req: InstallRequest) -> None:
        """Every check that can refuse an install, before anything is built or written."""
        requested = {p.value for p in manifest.permissions}
        missing = sorted(requested - set(req.approved_permissions))
        if missing:
            raise Conflict(
                f"{manifest.id} requests permissions that were not approved: {', '.join(missing)}",
                code="permissions_not_approved",
                details={"missing": missing, "requested": sorted(requested)},
            )
        self._validate_config(manifest, req.config)
        with self._session() as session:
            existing = crud.get_plugin(session, plugin_id=manifest.id)
            if existing is not None and crud.get_version(
                session, plugin_id=manifest.id, version=manifest.version
            ):
                raise Conflict(
                    f"{manifest.id} {manifest.version} is already installed",
                    code="already_installed",
                    details={"state": existing.state},
                )
            self._check_dependencies(session, manifest)

    def check_request(self, req: InstallRequest) -> None:
        """What can be refused before anything is fetched (also before an install is queued):
        the config's limits and a malformed image reference, the caller's mistake (422), not
        the runtime's (502)."""
        self.check_config(req.config)
        if req.image is not None:
            check_image_reference(req.image)

    def check_config(self, config: Any) -> None:
        """The limits every config is held to, whichever door it came in by (API, job, CLI):
        at most ``SUMMIT_CONFIG_MAX_BYTES`` of JSON (413), nested at most
        ``jsonlimits.MAX_DEPTH`` levels (422). Its schema is checked later, per manifest."""
        jsonlimits.check(
            config,
            what="the config",
            max_bytes=self.settings.config_max_bytes,
            too_large_code="config_too_large",
        )

    def _validate_config(self, manifest: Manifest, config: dict[str, Any]) -> None:
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

    def _check_dependencies(self, session: Session, manifest: Manifest) -> list[Plugin]:
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

    def _resources(
        self, manifest: Manifest, current: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The manifest's resources within the operator's caps, keeping the operator's own
        per-plugin limits (``set_limits``) across upgrades and reloads."""
        res: dict[str, Any] = manifest.resources.model_dump()
        res["memory_mb"] = min(res["memory_mb"], self.settings.max_memory_mb)
        res["cpu_percent"] = min(res["cpu_percent"], self.settings.max_cpu_percent)
        for key in OPERATOR_LIMITS:
            if current and current.get(key) is not None:
                res[key] = current[key]
        return res

    def _record_install(self, manifest: Manifest, req: InstallRequest, **image: Any) -> Plugin:
        try:
            return self._write_install(manifest, req, **image)
        except IntegrityError:
            # Another orchestrator replica recorded the same plugin version first.
            raise Conflict(
                f"{manifest.id} {manifest.version} is already installed", code="already_installed"
            ) from None

    def _write_install(
        self,
        manifest: Manifest,
        req: InstallRequest,
        *,
        image: str,
        image_id: str,
        source: str,
        source_digest: str | None,
        scan: dict[str, Any],
    ) -> Plugin:
        with self._locked(manifest.id), self._session() as session:
            self._check_dependencies(session, manifest)
            plugin = crud.get_plugin(session, plugin_id=manifest.id)
            if plugin is not None and crud.get_version(
                session, plugin_id=manifest.id, version=manifest.version
            ):
                raise Conflict(
                    f"{manifest.id} {manifest.version} is already installed",
                    code="already_installed",
                )
            session.add(
                PluginVersion(
                    plugin_id=manifest.id,
                    version=manifest.version,
                    manifest=manifest.to_json(),
                    image=image,
                    image_id=image_id,
                    source=source,
                    source_digest=source_digest,
                )
            )
            session.add(ScanReportRow(plugin_id=manifest.id, version=manifest.version, report=scan))
            if plugin is None:
                plugin = Plugin(
                    id=manifest.id,
                    version=manifest.version,
                    state=S.UNLOADED.value,
                    config=req.config,
                    resources=self._resources(manifest),
                )
                session.add(plugin)
                session.flush()
                self._transition(session, plugin, "install", f"installed {manifest.version}")
            elif plugin.state == S.ACTIVE.value:
                # An upgrade of a running plugin waits for reload; the old version keeps serving
                # with the grants it had: the new approval takes effect with the new version.
                plugin.pending_version = manifest.version
                plugin.updated_at = utcnow()
                session.add(plugin)
                return plugin
            else:
                plugin.version = manifest.version
                plugin.pending_version = None
                plugin.config = req.config
                plugin.resources = self._resources(manifest, plugin.resources)
                plugin.updated_at = utcnow()
                session.add(plugin)
            crud.set_grants(
                session,
                plugin_id=manifest.id,
                permissions=[p.value for p in manifest.permissions],
            )
            return plugin

    # -- enable ------------------------------------------------------------------------------

    def enable(self, plugin_id: str, *, reason: str = "enabled by operator") -> Plugin:
        self.runtime.ping()  # Docker down: 503 before any state changes.
        return self._enable(plugin_id, reason=reason, stack=())

    def _enable(self, plugin_id: str, *, reason: str, stack: tuple[str, ...]) -> Plugin:
        if plugin_id in stack:
            raise Conflict(
                "dependency cycle: " + " -> ".join((*stack, plugin_id)), code="dependency_cycle"
            )
        with self._session() as session:
            plugin = self._get(session, plugin_id)
            manifest = self.manifest_of(session, plugin)
            deps = self._check_dependencies(session, manifest)
        for dep in deps:
            if dep.state != S.ACTIVE.value:
                self._enable(dep.id, reason=f"dependency of {plugin_id}", stack=(*stack, plugin_id))
        with self._locked(plugin_id):
            self._cancel_restart(plugin_id)
            self._set_state(plugin_id, "enable", reason)
            return self._start(plugin_id)

    def _start(self, plugin_id: str) -> Plugin:
        """Run the plugin's container until it is initialized (INITIALIZING -> ACTIVE/FAILED)."""
        with self._session() as session:
            plugin = self._get(session, plugin_id)
            manifest = self.manifest_of(session, plugin)
            version = crud.get_version(session, plugin_id=plugin_id, version=plugin.version)
            assert version is not None
            grants = crud.list_grants(session, plugin_id=plugin_id)
            config = dict(plugin.config)
            resources = dict(plugin.resources)
        try:
            status = self._run_container(plugin_id, version, resources, config, grants)
        except SummitError as exc:
            self._set_state(plugin_id, "fail", exc.message)
            raise
        with self._session() as session:
            plugin = self._get(session, plugin_id)
            session.add(
                Container(
                    id=status.id,
                    plugin_id=plugin_id,
                    name=status.name,
                    version=plugin.version,
                    image=status.image,
                    endpoint=status.endpoint or "",
                )
            )
            self._transition(session, plugin, "initialized", "healthy and initialized")
        self._health_failures.pop(plugin_id, None)
        self.broker.set_route(self._route(plugin_id, status, manifest, resources))
        return plugin

    def _route(
        self,
        plugin_id: str,
        status: ContainerStatus | Container | _Endpoint,
        manifest: Manifest,
        resources: dict[str, Any],
    ) -> Route:
        return Route(
            plugin_id=plugin_id,
            version=manifest.version,
            endpoint=status.endpoint or "",
            extensions=tuple(manifest.extensions),
            timeout_ms=int(resources.get("timeout_ms", self.settings.default_timeout_ms)),
            rate_limit_requests=resources.get("rate_limit_requests"),
            rate_limit_window_s=resources.get("rate_limit_window_s"),
            concurrency=resources.get("concurrency"),
            subscribe=tuple(manifest.events.subscribe)
            if Permission.EVENTS_SUBSCRIBE in manifest.permissions
            else (),
        )

    def _run_container(
        self,
        plugin_id: str,
        version: PluginVersion,
        resources: dict[str, Any],
        config: dict[str, Any],
        grants: list[str],
    ) -> ContainerStatus:
        """Deploy, wait for health, initialize. On any failure the container is removed."""
        spec = ContainerSpec(
            plugin_id=plugin_id,
            version=version.version,
            image=version.image_id or version.image,
            memory_mb=int(resources.get("memory_mb", self.settings.default_memory_mb)),
            cpu_percent=int(resources.get("cpu_percent", self.settings.default_cpu_percent)),
            pids_limit=self.settings.pids_limit,
            tmpfs_mb=self.settings.tmpfs_mb,
            user=self.settings.plugin_user,
            log_max_size=self.settings.log_max_size,
        )
        status = self.runtime.deploy(spec)
        try:
            assert status.endpoint
            host = self.host.open(plugin_id, status.id, status.endpoint) if self.host else None
            host_url, host_token = host if host is not None else (None, None)
            with PluginClient(status.endpoint) as client:
                self._wait_healthy(client, status, plugin_id)
                client.initialize(
                    config=config, permissions=grants, host_url=host_url, host_token=host_token
                )
            return status
        except BaseException as exc:
            tail = self._log_tail(status.id)
            self._close_host(status.id, status.endpoint or "")
            self.runtime.remove(status.id)
            if isinstance(exc, SummitError):
                if tail:
                    exc.message = f"{exc.message}; last log lines:\n{tail}"
                raise
            if isinstance(exc, Exception):
                raise StartFailed(f"{plugin_id} failed to start: {exc!r}") from exc
            raise

    def _log_tail(self, container_id: str) -> str:
        try:
            return self.runtime.logs(container_id, tail=LOG_TAIL_ON_FAILURE).strip()
        except SummitError:
            return ""

    def _wait_healthy(self, client: PluginClient, status: ContainerStatus, plugin_id: str) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        next_inspect = time.monotonic() + 0.5
        last_error = "no answer"
        delay = 0.01
        while time.monotonic() < deadline:
            try:
                health = client.health(timeout_s=1.0)
                if health.plugin.id != plugin_id:
                    raise StartFailed(
                        f"container answers as plugin {health.plugin.id!r}, not {plugin_id!r}",
                        code="plugin_mismatch",
                    )
                return
            except SummitError:
                raise
            except Exception as exc:  # not listening yet
                last_error = str(exc) or type(exc).__name__
            if time.monotonic() >= next_inspect:
                current = self.runtime.status(status.id)
                if current is None or not current.running:
                    why = (
                        "OOMKilled"
                        if current and current.oom_killed
                        else (f"exited with code {current.exit_code}" if current else "vanished")
                    )
                    raise StartFailed(f"{plugin_id} stopped while starting: {why}")
                next_inspect = time.monotonic() + 0.5
            # A short, flat interval: a growing one overshoots the moment it becomes ready.
            time.sleep(delay)
        raise StartFailed(
            f"{plugin_id} did not become healthy within {self.settings.startup_timeout_s:g}s "
            f"({last_error})",
            code="startup_timeout",
        )

    # -- disable -----------------------------------------------------------------------------

    def dependents(self, session: Session, plugin_id: str, *, active_only: bool) -> list[str]:
        out = []
        for other in crud.list_plugins(session):
            if other.id == plugin_id or (active_only and other.state != S.ACTIVE.value):
                continue
            manifest = self.manifest_of(session, other)
            if any(d.id == plugin_id and not d.optional for d in manifest.dependencies):
                out.append(other.id)
        return out

    def disable(
        self, plugin_id: str, *, cascade: bool = False, reason: str = "disabled by operator"
    ) -> Plugin:
        with self._session() as session:
            plugin = self._get(session, plugin_id)
            if next_state(S(plugin.state), "disable") is None:
                self._transition(session, plugin, "disable")  # raises the 409
            users = self.dependents(session, plugin_id, active_only=True)
        if users and not cascade:
            raise Conflict(
                f"ACTIVE plugins depend on {plugin_id}: {', '.join(users)}",
                code="has_dependents",
                details={"dependents": users, "hint": "disable them first or pass cascade=true"},
            )
        for user in users:
            self.disable(user, cascade=True, reason=f"dependency {plugin_id} disabled")
        self.runtime.ping()
        with self._locked(plugin_id):
            self._cancel_restart(plugin_id)
            self._set_state(plugin_id, "disable", reason)
            self._stop_all(plugin_id, graceful=True)
            if self.host is not None:
                self.host.revoke_plugin(plugin_id)
            return self._set_state(plugin_id, "destroy", reason)

    def _stop_all(self, plugin_id: str, *, graceful: bool) -> None:
        """Take the plugin out of the broker, shut down and remove all its containers."""
        route = self.broker.drop_route(plugin_id)
        if route is not None:
            self.broker.wait_drained(route.endpoint, timeout_s=self.settings.shutdown_grace_s)
        with self._session() as session:
            rows = list(crud.list_containers(session, plugin_id=plugin_id))
        ids = {row.id: row.endpoint for row in rows}
        for status in self.runtime.list_owned():
            if status.plugin_id == plugin_id:
                ids.setdefault(status.id, status.endpoint or "")
        for container_id, endpoint in ids.items():
            self._retire(container_id, endpoint, graceful=graceful)
            with self._session() as session:
                crud.delete_container(session, container_id=container_id)

    def _retire(self, container_id: str, endpoint: str, *, graceful: bool) -> None:
        if graceful and endpoint:
            try:
                with PluginClient(endpoint, timeout_s=self.settings.shutdown_grace_s) as client:
                    client.shutdown(timeout_s=self.settings.shutdown_grace_s)
                deadline = time.monotonic() + self.settings.shutdown_grace_s
                while time.monotonic() < deadline:
                    current = self.runtime.status(container_id)
                    if current is None or not current.running:
                        break
                    time.sleep(0.05)
            except Exception as exc:  # a plugin that will not shut down is stopped anyway
                log.info("shutdown of %s did not answer: %s", container_id[:12], exc)
        self.runtime.remove(container_id, grace_s=1 if graceful else 0)
        self._close_host(container_id, endpoint)

    def _close_host(self, container_id: str, endpoint: str) -> None:
        if self.host is not None:
            try:
                self.host.close(container_id, endpoint)
            except Exception as exc:  # the container is gone either way; its token is revoked
                log.warning("closing the host API of %s failed: %s", container_id[:12], exc)

    # -- reload ------------------------------------------------------------------------------

    def reload(self, plugin_id: str, *, reason: str = "reloaded by operator") -> Plugin:
        self.runtime.ping()
        with self._locked(plugin_id):
            with self._session() as session:
                plugin = self._get(session, plugin_id)
                if next_state(S(plugin.state), "reload") is None:
                    self._transition(session, plugin, "reload")  # raises the 409
                target = plugin.pending_version or plugin.version
                version = crud.get_version(session, plugin_id=plugin_id, version=target)
                assert version is not None
                manifest = Manifest.model_validate(version.manifest)
                if target != plugin.version:
                    # Approved when the upgrade was installed; granted as it starts serving.
                    grants = sorted(p.value for p in manifest.permissions)
                else:
                    grants = crud.list_grants(session, plugin_id=plugin_id)
                resources = self._resources(manifest, plugin.resources)
                config = dict(plugin.config)
                self._validate_config(manifest, config)
                old_rows = list(crud.list_containers(session, plugin_id=plugin_id))
            status = self._run_container(plugin_id, version, resources, config, grants)
            # The new container is healthy: switch traffic, then record it.
            old_route = self.broker.set_route(self._route(plugin_id, status, manifest, resources))
            with self._session() as session:
                plugin = self._get(session, plugin_id)
                for row in old_rows:
                    crud.delete_container(session, container_id=row.id)
                session.add(
                    Container(
                        id=status.id,
                        plugin_id=plugin_id,
                        name=status.name,
                        version=target,
                        image=status.image,
                        endpoint=status.endpoint or "",
                    )
                )
                previous = plugin.version
                if previous != target:
                    crud.set_grants(session, plugin_id=plugin_id, permissions=grants)
                plugin.version = target
                plugin.pending_version = None
                plugin.resources = resources
                self._transition(
                    session,
                    plugin,
                    "reload",
                    reason if previous == target else f"{reason}: {previous} -> {target}",
                )
            if old_route is not None:
                self.broker.wait_drained(
                    old_route.endpoint, timeout_s=self.settings.shutdown_grace_s
                )
            for row in old_rows:
                self._retire(row.id, row.endpoint, graceful=True)
            return plugin

    # -- uninstall ---------------------------------------------------------------------------

    def uninstall(self, plugin_id: str) -> None:
        with self._locked(plugin_id):
            with self._session() as session:
                plugin = self._get(session, plugin_id)
                if next_state(S(plugin.state), "uninstall") is None:
                    self._transition(session, plugin, "uninstall")  # raises the 409
                users = self.dependents(session, plugin_id, active_only=False)
                if users:
                    raise Conflict(
                        f"installed plugins depend on {plugin_id}: {', '.join(users)}",
                        code="has_dependents",
                        details={"dependents": users},
                    )
                # Built images, and images pulled from a registry, go with the plugin; a local
                # image the operator named by hand is theirs to keep.
                images = {
                    v.image
                    for v in crud.list_versions(session, plugin_id=plugin_id)
                    if v.source == "bundle" or _pulled_from_registry(v.image)
                }
            self.runtime.ping()
            self._cancel_restart(plugin_id)
            self._stop_all(plugin_id, graceful=False)
            if self.host is not None:
                self.host.revoke_plugin(plugin_id)
            with self._session() as session:
                plugin = self._get(session, plugin_id)
                self._transition(session, plugin, "uninstall", "uninstalled")
                in_use = crud.images_in_use(session, exclude_plugin=plugin_id)
                crud.delete_plugin(session, plugin_id=plugin_id)
            for image in sorted(images - in_use):
                self.runtime.remove_image(image)

    # -- config ------------------------------------------------------------------------------

    def set_config(self, plugin_id: str, config: dict[str, Any]) -> Plugin:
        self.check_config(config)
        with self._locked(plugin_id):
            with self._session() as session:
                plugin = self._get(session, plugin_id)
                manifest = self.manifest_of(session, plugin)
                self._validate_config(manifest, config)
                plugin.config = config
                plugin.updated_at = utcnow()
                session.add(plugin)
                grants = crud.list_grants(session, plugin_id=plugin_id)
            route = self.broker.route(plugin_id)
            if route is not None:
                with PluginClient(route.endpoint) as client:
                    client.initialize(config=config, permissions=grants)
            return plugin

    def set_limits(self, plugin_id: str, limits: dict[str, Any]) -> Plugin:
        """Operator overrides of the broker's limits for one plugin (None: the default)."""
        with self._locked(plugin_id):
            with self._session() as session:
                plugin = self._get(session, plugin_id)
                resources = {**plugin.resources}
                for key, value in limits.items():
                    if value is None:
                        resources.pop(key, None)
                    else:
                        resources[key] = value
                plugin.resources = resources
                plugin.updated_at = utcnow()
                session.add(plugin)
                manifest = self.manifest_of(session, plugin)
            route = self.broker.route(plugin_id)
            if route is not None:
                self.broker.set_route(
                    self._route(plugin_id, _Endpoint(route.endpoint), manifest, resources)
                )
            return plugin

    # -- crashes and health ------------------------------------------------------------------

    def on_runtime_event(self, event: RuntimeEvent) -> None:
        if event.kind != "die" or not event.plugin_id:
            return
        self._crashed(event.plugin_id, event.container_id, None)

    def _crashed(self, plugin_id: str, container_id: str, why: str | None) -> None:
        with self._locked(plugin_id):
            with self._session() as session:
                plugin = crud.get_plugin(session, plugin_id=plugin_id)
                current = crud.current_container(session, plugin_id=plugin_id)
                if plugin is None or plugin.state != S.ACTIVE.value:
                    return
                if current is None or current.id != container_id:
                    return  # an old container retired by reload, or not ours to judge
            if why is None:
                status = self.runtime.status(container_id)
                if status is None:
                    why = "container vanished"
                elif status.oom_killed:
                    why = "OOMKilled"
                else:
                    why = f"exited with code {status.exit_code}"
            tail = self._log_tail(container_id)
            self.broker.drop_route(plugin_id)
            self.runtime.remove(container_id)
            self._close_host(container_id, current.endpoint)
            with self._session() as session:
                crud.delete_container(session, container_id=container_id)
                plugin = self._get(session, plugin_id)
                window = utcnow() - timedelta(seconds=self.settings.crash_window_s)
                crashes = (
                    crud.count_transitions_since(
                        session, plugin_id=plugin_id, action="fail", since=window
                    )
                    + 1
                )
                reason = why + (f"; last log lines:\n{tail}" if tail and why != "OOMKilled" else "")
                self._transition(session, plugin, "fail", reason)
            if crashes >= self.settings.crash_limit:
                log.warning("plugin %s crashed %d times; it stays FAILED", plugin_id, crashes)
                return
            delay = min(
                self.settings.restart_backoff_s * (2 ** (crashes - 1)),
                self.settings.restart_backoff_cap_s,
            )
            self._schedule_restart(plugin_id, delay)

    def _schedule_restart(self, plugin_id: str, delay: float) -> None:
        if self._stopping.is_set():
            return
        timer = threading.Timer(delay, self._restart, args=(plugin_id,))
        timer.daemon = True
        with self._locks_guard:
            old = self._restart_timers.pop(plugin_id, None)
            self._restart_timers[plugin_id] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def _cancel_restart(self, plugin_id: str) -> None:
        with self._locks_guard:
            timer = self._restart_timers.pop(plugin_id, None)
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()

    def _restart(self, plugin_id: str) -> None:
        if self._stopping.is_set():
            return
        with self._session() as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            if plugin is None or plugin.state != S.FAILED.value:
                return
        try:
            self.enable(plugin_id, reason="restarted after a crash")
        except SummitError as exc:
            log.warning("restart of %s failed: %s", plugin_id, exc.message)

    def probe_health(self) -> None:
        """One round of health probes; a plugin failing ``health_failures`` in a row crashes."""
        for route in self.broker.routes():
            try:
                with PluginClient(route.endpoint) as client:
                    client.health(timeout_s=2.0)
                self._health_failures.pop(route.plugin_id, None)
            except Exception:
                n = self._health_failures.get(route.plugin_id, 0) + 1
                self._health_failures[route.plugin_id] = n
                if n >= self.settings.health_failures:
                    self._health_failures.pop(route.plugin_id, None)
                    with self._session() as session:
                        row = crud.current_container(session, plugin_id=route.plugin_id)
                    if row is not None:
                        self._crashed(route.plugin_id, row.id, f"failed {n} health checks")

    # -- reconcile ---------------------------------------------------------------------------

    def sweep_workdirs(self) -> None:
        """Delete unpacked bundles and build contexts that a killed orchestrator left behind.

        Called at start-up before the API serves, when no install can be in progress.
        """
        for name in ("bundles", "build"):
            folder = self.settings.state_dir / name
            if folder.is_dir():
                for child in folder.iterdir():
                    shutil.rmtree(child, ignore_errors=True)

    def reconcile(self) -> dict[str, list[str]]:
        """Make Docker and the database agree after a start (or a crash of the orchestrator)."""
        report: dict[str, list[str]] = {
            "adopted": [],
            "removed": [],
            "restarted": [],
            "settled": [],
        }
        owned = {c.id: c for c in self.runtime.list_owned()}
        with self._session() as session:
            plugins = {p.id: p for p in crud.list_plugins(session)}
            rows = {c.id: c for c in crud.list_containers(session)}
            manifests = {pid: self.manifest_of(session, p) for pid, p in plugins.items()}
        keep_endpoints: set[str] = set()
        for cid, row in rows.items():
            plugin = plugins.get(row.plugin_id)
            status = owned.get(cid)
            if plugin is not None and plugin.state == S.ACTIVE.value and status and status.running:
                self.broker.set_route(
                    self._route(plugin.id, row, manifests[plugin.id], dict(plugin.resources))
                )
                keep_endpoints.add(row.endpoint)
                report["adopted"].append(plugin.id)
                if self.host is not None:
                    self.host.reattach(plugin.id, row.endpoint)
            else:
                with self._session() as session:
                    crud.delete_container(session, container_id=cid)
                if status is None:
                    self._close_host(cid, row.endpoint)
        for cid, status in owned.items():
            if status.endpoint not in keep_endpoints:
                self.runtime.remove(cid)
                self._close_host(cid, status.endpoint or "")
                report["removed"].append(status.name)
        sweep = getattr(self.runtime, "sweep_endpoints", None)
        if sweep is not None:
            sweep(keep_endpoints)
        for pid, plugin in plugins.items():
            state = S(plugin.state)
            if state == S.ACTIVE and pid not in report["adopted"]:
                self._set_state(pid, "fail", "container gone at orchestrator start")
                report["restarted"].append(pid)
            elif state == S.INITIALIZING:
                self._set_state(pid, "fail", "orchestrator stopped during enable")
                report["restarted"].append(pid)
            elif state == S.UNLOADING:
                self._set_state(pid, "destroy", "orchestrator stopped during disable")
                report["settled"].append(pid)
        for pid in report["restarted"]:
            try:
                self.enable(pid, reason="restarted by reconcile")
            except SummitError as exc:
                log.warning("reconcile could not restart %s: %s", pid, exc.message)
        return report

    def stop(self) -> None:
        self._stopping.set()
        with self._locks_guard:
            timers = list(self._restart_timers.values())
            self._restart_timers.clear()
        for timer in timers:
            timer.cancel()


@dataclass(frozen=True)
class _Endpoint:
    endpoint: str


def _pulled_from_registry(ref: str) -> bool:
    first = ref.split("/", 1)[0]
    return "/" in ref and ("." in first or ":" in first or first == "localhost")
