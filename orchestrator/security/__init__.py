"""Supply-chain checks on a plugin before it is built: its code and its declared dependencies.

``scanner`` analyses the plugin's Python source (bandit plus Summit's own rules);
``advisories`` matches its pinned requirements against an OSV advisory database. The modules
beside them (``secretbox``, ``tokens``) are imported by their own paths.
"""

from orchestrator.security.advisories import (
    Advisory,
    AdvisoryDatabase,
    AdvisoryDatabaseError,
    AdvisoryMatch,
    DependencyReport,
    DependencyStatus,
    check,
    read_requirements,
)
from orchestrator.security.scanner import (
    SEVERITIES,
    Finding,
    ScanError,
    Severity,
    blocking,
    scan_source,
    summarize,
)

__all__ = [
    "SEVERITIES",
    "Advisory",
    "AdvisoryDatabase",
    "AdvisoryDatabaseError",
    "AdvisoryMatch",
    "DependencyReport",
    "DependencyStatus",
    "Finding",
    "ScanError",
    "Severity",
    "blocking",
    "check",
    "read_requirements",
    "scan_source",
    "summarize",
]
