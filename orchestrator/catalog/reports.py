"""Install reports: an orchestrator that reads a remote catalog (``SUMMIT_CATALOG_URL``) tells
that catalog about the installs and uninstalls of its plugins, so the catalog's statistics
count every orchestrator it serves, not only itself.

Both halves are here:

* :class:`InstallReporter`, on the orchestrator that reads a remote catalog. It listens to the
  lifecycle events this replica commits (``plugin.installed``, ``plugin.uninstalled``, as the
  local statistics do: each event is counted by the one replica that logged it) and sends
  each one that concerns a version of that catalog, installed from that version's image (the
  digest decides, as in ``tracking.py``), as
  ``POST <catalog>/v1/catalog/plugins/{id}/versions/{version}/installs
  {"event": "install"|"uninstall", "orchestrator": "<id>"}``. Sending never holds up or fails
  an install: reports wait in memory and a catalog that cannot be reached is tried again
  every ``retry_s`` (what waits is lost only if the process is killed).
* :class:`InstallReportService`, on the catalog. A report needs only the viewer role (any
  token an orchestrator reads the catalog with), so it cannot be trusted to be unique: it is
  counted once per orchestrator, version, event and UTC day (a retry or a replay adds
  nothing), each token may report for at most :data:`MAX_REPORTS_PER_TOKEN` orchestrators
  per version and day, and the catalog's rate limit holds as for every catalog request.

The orchestrator id a reporter sends is made once and kept in the state folder
(``catalog-reporter-id``), so a restart reports as the same orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from orchestrator.catalog.sources import CatalogUnreachable, RemoteCatalog
from orchestrator.catalog.tracking import INSTALLED, ORCHESTRATOR, UNINSTALLED, image_digest
from orchestrator.domain.errors import NotFound, SummitError
from orchestrator.events.bus import Event, EventBus
from orchestrator.security.access import Caller
from orchestrator.store import catalog as catalog_store
from orchestrator.store import crud
from orchestrator.store import install_reports as store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import utcnow

__all__ = [
    "MAX_REPORTS_PER_TOKEN",
    "InstallReportRequest",
    "InstallReportService",
    "InstallReporter",
    "reporter_id",
]

log = logging.getLogger(__name__)

MAX_REPORTS_PER_TOKEN = 200  # orchestrators per token, plugin version and day
MAX_WAITING = 10_000  # reports kept while the catalog cannot be reached
_EVENTS = {INSTALLED: "install", UNINSTALLED: "uninstall"}


# -- the catalog's side -----------------------------------------------------------------------


class InstallReportRequest(BaseModel):
    event: Literal["install", "uninstall"]
    orchestrator: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="The reporting orchestrator's id (the same one every time)",
    )


class ReportLimited(SummitError):
    status_code = 429
    code = "report_limit"


@dataclass
class InstallReportService:
    engine: Engine
    on_change: Callable[[], None] | None = None  # the catalog cache's bump (plugin pages)

    def record(
        self, plugin_id: str, version: str, req: InstallReportRequest, caller: Caller
    ) -> dict[str, Any]:
        """Count the report in today's statistics of the version; ``recorded`` False when
        this orchestrator reported this event of this version today already."""
        day = utcnow().date()
        reporter = caller.token_id or caller.actor
        with session_scope(self.engine) as session:
            if catalog_store.get_version(session, plugin_id=plugin_id, version=version) is None:
                raise NotFound(
                    f"{plugin_id} {version} is not in the catalog", code="version_not_found"
                )
            if (
                store.reports_by(
                    session, reporter=reporter, plugin_id=plugin_id, version=version, day=day
                )
                >= MAX_REPORTS_PER_TOKEN
            ):
                raise ReportLimited(
                    f"this token reported {plugin_id} {version} for {MAX_REPORTS_PER_TOKEN} "
                    "orchestrators today already",
                    details={"limit": MAX_REPORTS_PER_TOKEN},
                )
            recorded = store.add_report(
                session,
                plugin_id=plugin_id,
                version=version,
                day=day,
                event=req.event,
                orchestrator=req.orchestrator,
                reporter=reporter,
            )
            if recorded:
                catalog_store.record_stats(
                    session,
                    plugin_id=plugin_id,
                    version=version,
                    day=day,
                    installs=int(req.event == "install"),
                    uninstalls=int(req.event == "uninstall"),
                )
        if recorded and self.on_change is not None:
            self.on_change()
        return {
            "plugin_id": plugin_id,
            "version": version,
            "event": req.event,
            "day": day.isoformat(),
            "recorded": recorded,
        }


# -- the reporting orchestrator's side --------------------------------------------------------


def reporter_id(state_dir: Path, instance: str) -> str:
    """This orchestrator's id in its reports: made once, kept in the state folder."""
    path = state_dir / "catalog-reporter-id"
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if kept:
            return kept
    made = f"{instance[:80]}-{secrets.token_hex(8)}"
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(made + "\n")
    return made


@dataclass
class _Report:
    event: str  # install, uninstall
    plugin_id: str
    version: str
    seen: bool = False  # whether the installation's image is known
    digest: str | None = None  # the digest that image names (None: a tag, a local build)


class InstallReporter:
    """Sends this replica's installs and uninstalls of a remote catalog's plugins to it."""

    def __init__(
        self,
        *,
        engine: Engine,
        catalog: RemoteCatalog,
        events: EventBus,
        orchestrator: str,
        retry_s: float = 60.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.events = events
        self.orchestrator = orchestrator
        self.retry_s = retry_s
        self.close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._waiting: list[_Report] = []
        # (plugin, version) -> the digest its installed image names, as last read: an
        # uninstall is judged by what the installation was, and its rows are gone by then.
        self._known: dict[tuple[str, str], str | None] = {}
        self._attached = False
        self._listening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def attach(self) -> None:
        self._attached = True
        if not self._listening:  # the bus cannot forget a commit listener: added once
            self._listening = True
            self.events.on_committed(self._committed)

    def start(self) -> None:
        self.attach()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="catalog install reports")

    async def aclose(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.close_timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("catalog install reports: the last ones were not sent")
            self._task = None
        self._attached = False
        self._loop = None

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def load(self) -> None:
        """Read the digests of the installed versions (for uninstalls of plugins installed
        before this start)."""
        with session_scope(self.engine) as session:
            known = {
                (plugin.id, row.version): image_digest(row.image)
                for plugin in crud.list_plugins(session)
                for row in crud.list_versions(session, plugin_id=plugin.id)
            }
        with self._lock:
            self._known.update(known)

    def _committed(self, events: list[Event]) -> None:
        """Events this replica logged (the committing thread)."""
        if not self._attached:
            return
        reports = []
        for e in events:
            event = _EVENTS.get(e.type)
            payload = e.payload if isinstance(e.payload, dict) else {}
            if event is None or e.source != ORCHESTRATOR:
                continue
            plugin_id, version = payload.get("plugin"), payload.get("version")
            if not plugin_id or not version:
                continue
            reports.append(_Report(event, str(plugin_id), str(version)))
        if not reports:
            return
        with self._lock:
            for report in reports:
                key = (report.plugin_id, report.version)
                if report.event == "uninstall" and key in self._known:
                    report.seen, report.digest = True, self._known.pop(key)
            self._waiting.extend(reports)
            del self._waiting[:-MAX_WAITING]
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        try:
            await asyncio.to_thread(self.load)
        except Exception:
            log.exception("catalog install reports: could not read the installed plugins")
        delay: float | None = None  # None: until woken
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            stopping = self._stopping.is_set()
            try:
                await asyncio.to_thread(self.send)
            except Exception:
                log.exception("catalog install reports: sending failed")
            if stopping:
                return
            delay = self.retry_s if self.waiting else None

    def send(self) -> int:
        """Send what waits, in order; what the catalog could not take now waits for the
        next time. The number sent."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        sent = 0
        for i, report in enumerate(batch):
            try:
                if self._concerns_catalog(report) and self.catalog.report(
                    report.plugin_id,
                    report.version,
                    event=report.event,
                    orchestrator=self.orchestrator,
                ):
                    sent += 1
            except CatalogUnreachable as exc:
                log.warning("catalog install reports wait: %s", exc.message)
                with self._lock:
                    self._waiting[:0] = batch[i:]
                    del self._waiting[:-MAX_WAITING]
                break
            except Exception:
                log.exception("catalog install report of %s dropped", report.plugin_id)
        return sent

    def _concerns_catalog(self, report: _Report) -> bool:
        """Whether the report is of a version of the remote catalog, installed from that
        version's image (when nothing is known of the image, the id and version decide)."""
        if report.event == "install" and not report.seen:
            with session_scope(self.engine) as session:
                row = crud.get_version(session, plugin_id=report.plugin_id, version=report.version)
                if row is not None:
                    report.seen, report.digest = True, image_digest(row.image)
            if report.seen:
                with self._lock:
                    self._known[(report.plugin_id, report.version)] = report.digest
        entry = next(
            (e for e in self.catalog.versions(report.plugin_id) if e.version == report.version),
            None,
        )
        if entry is None:
            return False
        return not report.seen or report.digest == entry.digest
