"""The supply-chain check of an install: static analysis of the source and dependency
advisories, judged by the install policy.

A signal, not the boundary: the sandbox contains what the scanner misses. The policy refuses
an install with findings at or above ``SUMMIT_SCAN_FAIL_ON`` (default HIGH) unless an admin
overrides it, and the override is kept with the report.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.domain.manifest import Manifest, Permission
from orchestrator.security.advisories import AdvisoryDatabase, check, read_requirements
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

    def to_json(self) -> dict[str, Any]:
        return {
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


class SupplyChainCheck:
    def __init__(self, settings: Settings) -> None:
        self.fail_on = settings.scan_fail_on
        self.advisory_dir = settings.advisory_db
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
        severities = [f.severity for f in found]
        advisory_findings = []
        for dep in report.dependencies:
            for adv in dep.get("advisories") or []:
                severity = _ADVISORY_SEVERITY.get(str(adv.get("severity") or ""), "MEDIUM")
                severities.append(severity)  # type: ignore[arg-type]
                advisory_findings.append(
                    {
                        "file": "requirements.txt",
                        "line": 0,
                        "rule": f"osv:{adv['id']}",
                        "severity": severity,
                        "message": f"{dep['requirement']}: {adv.get('summary') or adv['id']}",
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
        return report

    def inspect_image(self) -> ScanReport:
        return ScanReport(
            source="image",
            fail_on=self.fail_on,
            summary={s: 0 for s in SEVERITIES},
            note="installed from an image: no source to scan (sign it to vouch for it)",
        )
