"""The supply-chain check of an install: static analysis of the plugin's code and dependency
advisories, judged by the install policy.

A source bundle is checked as uploaded (its files, its ``requirements.txt``). An image is
checked by what it holds: its filesystem is read without running it
(``ImageStore.extract_filesystem``: only the files the scan needs, within
``SUMMIT_IMAGE_SCAN_MAX_BYTES``, default 2 GiB unpacked), its plugin code goes through the
same scanner, and the Python distributions and npm packages installed in it through the
advisory database (``security/image_contents.py``). Both produce one ``ScanReport`` shape,
kept with the installed version.

A signal, not the boundary: the sandbox contains what the scanner misses. The policy refuses
an install with findings at or above ``SUMMIT_SCAN_FAIL_ON`` (default HIGH) unless an admin
overrides it, and the override is kept with the report.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.domain.manifest import Manifest, Permission
from orchestrator.runtime.base import ImageInfo, ImageStore
from orchestrator.security.advisories import AdvisoryDatabase, check, read_requirements
from orchestrator.security.image_contents import plugin_dir_of, scan_image_contents, selector
from orchestrator.security.scanner import SEVERITIES, scan_source

__all__ = ["ScanReport", "SupplyChainCheck"]

# OSV ratings onto the scanner's scale: a critical advisory blocks like a HIGH finding.
_ADVISORY_SEVERITY = {"CRITICAL": "HIGH", "HIGH": "HIGH", "MEDIUM": "MEDIUM", "LOW": "LOW"}


@dataclass
class ScanReport:
    source: str  # "bundle" | "image"
    findings: list[dict[str, Any]] = field(default_factory=list)
    dependencies: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)
    blocking: list[dict[str, Any]] = field(default_factory=list)
    fail_on: str = "HIGH"
    note: str | None = None
    override: dict[str, Any] | None = None
    signature: dict[str, Any] | None = None
    # Images only: which image was read, where its code was, what it held, how long it took.
    image: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "source": self.source,
            "summary": self.summary,
            "fail_on": self.fail_on,
            "blocking": self.blocking,
            "findings": self.findings,
            "dependencies": self.dependencies,
            "note": self.note,
            "override": self.override,
            "signature": self.signature,
        }
        if self.image is not None:
            out["image"] = self.image
        return out


class SupplyChainCheck:
    def __init__(self, settings: Settings) -> None:
        self.fail_on = settings.scan_fail_on
        self.advisory_dir = settings.advisory_db
        # Read once a Settings field of that name exists; 2 GiB until then.
        self.image_max_bytes = settings.image_scan_max_bytes
        self.workdir = settings.state_dir / "image-scan"
        self._db: AdvisoryDatabase | None = None
        self._lock = threading.Lock()

    def _advisories(self) -> AdvisoryDatabase | None:
        if self.advisory_dir is None:
            return None
        with self._lock:
            if self._db is None:
                self._db = AdvisoryDatabase.load(self.advisory_dir)
            return self._db

    def inspect_source(self, source: Path, manifest: Manifest) -> ScanReport:
        network = Permission.NETWORK_ACCESS in manifest.permissions
        found = scan_source(source, network_access=network)
        report = ScanReport(source="bundle", fail_on=self.fail_on)
        report.findings = [f.to_json() for f in found]
        requirements = read_requirements(source)
        db = self._advisories()
        if db is None:
            report.dependencies = [
                {
                    "requirement": line,
                    "status": "unchecked",
                    "reason": "no advisory database is configured (SUMMIT_ADVISORY_DB)",
                }
                for line in requirements
            ]
        else:
            report.dependencies = [d.to_json() for d in check(requirements, db)]
        self._conclude(report)
        return report

    def inspect_image(self, images: ImageStore, image: ImageInfo, manifest: Manifest) -> ScanReport:
        """Read ``image`` through ``images`` and scan what it holds; the same report shape as
        ``inspect_source``, its findings named by their paths in the image.

        Raises ``ImageTooLarge`` past ``SUMMIT_IMAGE_SCAN_MAX_BYTES`` and ``ImageUnreadable``
        for an unsafe archive: an image that cannot be read is not installed.
        """
        started = time.monotonic()
        network = Permission.NETWORK_ACCESS in manifest.permissions
        plugin_dir = plugin_dir_of(image.labels, image.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="image-", dir=self.workdir))
        try:
            fs = images.extract_filesystem(
                image.id,
                work / "root",
                wanted=selector(plugin_dir),
                max_bytes=self.image_max_bytes,
            )
            contents = scan_image_contents(
                fs.root,
                plugin_dir=plugin_dir,
                network_access=network,
                db=self._advisories(),
                links=fs.links,
                unresolved=fs.unresolved,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report = ScanReport(source="image", fail_on=self.fail_on)
        report.findings = [f.to_json() for f in contents.findings]
        report.dependencies = [d.to_json() for d in contents.dependencies]
        report.image = {
            "id": image.id,
            "plugin_dir": plugin_dir,
            "code_files": contents.code_files,
            "python_packages": contents.python_packages,
            "node_packages": contents.node_packages,
            "unpacked_bytes": fs.unpacked_bytes,
            "seconds": round(time.monotonic() - started, 3),
        }
        self._conclude(report)
        return report

    def _conclude(self, report: ScanReport) -> None:
        """Advisories as findings, the summary, and the findings that block under the policy."""
        severities = [str(f["severity"]) for f in report.findings]
        advisory_findings = []
        for dep in report.dependencies:
            # A requirement line is in requirements.txt; an installed package where it was seen.
            where = (dep.get("locations") or ["requirements.txt"])[0]
            label = dep["requirement"]
            for adv in dep.get("advisories") or []:
                severity = _ADVISORY_SEVERITY.get(str(adv.get("severity") or ""), "MEDIUM")
                severities.append(severity)
                advisory_findings.append(
                    {
                        "file": where,
                        "line": 0,
                        "rule": f"osv:{adv['id']}",
                        "severity": severity,
                        "message": f"{label}: {adv.get('summary') or adv['id']}",
                    }
                )
        report.findings += advisory_findings
        report.summary = {s: severities.count(s) for s in SEVERITIES}
        report.summary["unchecked_dependencies"] = sum(
            1 for d in report.dependencies if d["status"] == "unchecked"
        )
        if self.fail_on != "never":
            threshold = SEVERITIES.index(self.fail_on)
            report.blocking = [
                f for f in report.findings if SEVERITIES.index(f["severity"]) >= threshold
            ]
