"""Known vulnerabilities in a plugin's dependencies (installation step 3).

The advisory database is a folder of OSV records (https://ossf.github.io/osv-schema/), such as
an export of osv.dev's PyPI and npm ecosystems that the operator keeps current. Two
ecosystems are read, each compared by its own rules:

- ``PyPI``: versions by PEP 440 (``packaging``), names after PEP 503 normalisation, so
  ``Py_YAML`` and ``pyyaml`` are one package;
- ``npm``: versions by semver 2.0.0 precedence (``orchestrator.domain.versions.Version``, the
  type plugin versions use; build metadata is ignored, as semver says), names as written,
  since npm tells ``JSONStream`` and ``jsonstream`` apart.

Records of other ecosystems are skipped. Two entry points:

- ``check`` takes requirement lines (a source plugin's ``requirements.txt``). Only a
  requirement pinned to exactly one version can be checked. Anything else (a range, no
  version, a URL, an editable install, a line that does not parse) is reported ``unchecked``
  with the reason, never ``clean``: the version a build would pick is not known here.
  Environment markers are not evaluated, so a pin is checked even when its marker would skip
  it.
- ``check_pins`` takes packages already installed at one version (``PackagePin``: found in an
  image's ``*.dist-info`` folders or npm lockfiles). A version its ecosystem cannot order is
  reported ``unchecked``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from orchestrator.domain.errors import SummitError
from orchestrator.domain.versions import Version as SemVer
from orchestrator.domain.versions import VersionError

__all__ = [
    "Advisory",
    "AdvisoryDatabase",
    "AdvisoryDatabaseError",
    "AdvisoryMatch",
    "DependencyReport",
    "DependencyStatus",
    "Ecosystem",
    "PackagePin",
    "check",
    "check_pins",
    "parse_npm_version",
    "read_requirements",
]

DependencyStatus = Literal["vulnerable", "clean", "unchecked"]
AdvisorySeverity = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]

Ecosystem = Literal["PyPI", "npm"]
ECOSYSTEM: Ecosystem = "PyPI"  # what requirement lines are checked against
NPM: Ecosystem = "npm"
REQUIREMENTS_FILE = "requirements.txt"
_NO_DATABASE = "no advisory database is configured (SUMMIT_ADVISORY_DB)"


class AdvisoryDatabaseError(SummitError):
    """The advisory database cannot be read; the message names the file."""

    code = "advisory_database_invalid"


@dataclass(frozen=True)
class AdvisoryMatch:
    """One advisory that applies to a pinned version."""

    id: str
    summary: str
    severity: AdvisorySeverity | None
    fixed: str | None  # the nearest later version that this advisory does not affect
    aliases: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "aliases": list(self.aliases)}


@dataclass(frozen=True)
class DependencyReport:
    """The outcome for one requirement line; ``version`` is set only when it was checked."""

    requirement: str
    name: str | None
    version: str | None
    status: DependencyStatus
    advisories: tuple[AdvisoryMatch, ...] = ()
    reason: str | None = None  # why the requirement is unchecked
    # Set for an installed package (``check_pins``): its ecosystem and where it was found.
    ecosystem: Ecosystem | None = None
    locations: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requirement": self.requirement,
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "advisories": [a.to_json() for a in self.advisories],
            "reason": self.reason,
        }
        if self.ecosystem is not None:
            # Only for installed packages: a requirement line's report keeps its old shape.
            out["ecosystem"] = self.ecosystem
            out["locations"] = list(self.locations)
        return out


@dataclass(frozen=True)
class PackagePin:
    """A package installed at one version, and where it was seen (paths, for the report)."""

    ecosystem: Ecosystem
    name: str
    version: str
    locations: tuple[str, ...] = ()


# A version of one ecosystem: PEP 440 for PyPI, semver for npm. Never compared across the two.
V = TypeVar("V", Version, SemVer)


@dataclass(frozen=True)
class _Range(Generic[V]):
    """One ``ECOSYSTEM`` or ``SEMVER`` range, its events sorted for the OSV walk."""

    # (version or None for "0", kind); kinds: introduced, fixed, last_affected.
    events: tuple[tuple[V | None, str], ...]
    limits: tuple[V, ...]  # empty: no limit ("*" or none given)

    def contains(self, version: V) -> bool:
        if self.limits and not any(version < limit for limit in self.limits):
            return False
        affected = False
        for event, kind in self.events:
            if kind == "introduced":
                if event is None or version >= event:
                    affected = True
            elif event is not None and (
                (kind == "fixed" and version >= event)
                or (kind == "last_affected" and version > event)
            ):
                affected = False
        return affected

    def fixes(self) -> Iterator[V]:
        for event, kind in self.events:
            if kind == "fixed" and event is not None:
                yield event


@dataclass(frozen=True)
class Advisory(Generic[V]):
    """An OSV record as it concerns one package (of one ecosystem: ``V`` is its version type)."""

    id: str
    summary: str
    severity: AdvisorySeverity | None
    aliases: tuple[str, ...] = ()
    ranges: tuple[_Range[V], ...] = field(default=(), repr=False)
    versions: frozenset[V] = field(default=frozenset(), repr=False)  # listed as affected

    def affects(self, version: V) -> bool:
        return version in self.versions or any(r.contains(version) for r in self.ranges)

    def fixed_for(self, version: V) -> str | None:
        """The lowest ``fixed`` version above ``version`` that this advisory spares."""
        later = sorted({fix for r in self.ranges for fix in r.fixes() if fix > version})
        return next((str(fix) for fix in later if not self.affects(fix)), None)

    def match(self, version: V) -> AdvisoryMatch:
        return AdvisoryMatch(
            self.id, self.summary, self.severity, self.fixed_for(version), self.aliases
        )


class AdvisoryDatabase:
    """Advisories indexed by ecosystem and package name (PyPI names normalised)."""

    def __init__(
        self,
        advisories: Mapping[str, Iterable[Advisory[Version]]] | None = None,
        *,
        npm: Mapping[str, Iterable[Advisory[SemVer]]] | None = None,
    ) -> None:
        self._by_package: dict[str, list[Advisory[Version]]] = {}
        for name, items in (advisories or {}).items():
            self._by_package.setdefault(canonicalize_name(name), []).extend(items)
        self._npm: dict[str, list[Advisory[SemVer]]] = {}
        for name, npm_items in (npm or {}).items():
            self._npm.setdefault(name, []).extend(npm_items)

    @classmethod
    def load(cls, directory: Path) -> AdvisoryDatabase:
        """Every ``*.json`` OSV record under ``directory`` (searched recursively)."""
        if not directory.is_dir():
            raise AdvisoryDatabaseError(f"advisory database {directory} is not a directory")
        pypi: dict[str, list[Advisory[Version]]] = {}
        npm: dict[str, list[Advisory[SemVer]]] = {}
        for path in sorted(directory.rglob("*.json")):
            details = {"file": str(path)}
            try:
                data = path.read_bytes()
            except OSError as exc:
                message = f"advisory file {path} cannot be read: {exc.strerror}"
                raise AdvisoryDatabaseError(message, details=details) from exc
            try:
                record = json.loads(data)
            except (ValueError, RecursionError) as exc:
                # ValueError covers JSONDecodeError and bytes that are not UTF-8.
                message = f"advisory file {path} is not valid JSON: {exc}"
                raise AdvisoryDatabaseError(message, details=details) from exc
            try:
                for name, advisory in _parse_record(record, _PYPI):
                    pypi.setdefault(name, []).append(advisory)
                for npm_name, npm_advisory in _parse_record(record, _NPM):
                    npm.setdefault(npm_name, []).append(npm_advisory)
            except _RecordError as exc:
                message = f"advisory file {path} is not an OSV record: {exc}"
                raise AdvisoryDatabaseError(message, details=details) from exc
        return cls(pypi, npm=npm)

    def advisories_for(self, name: str) -> list[Advisory[Version]]:
        """The PyPI advisories of ``name`` (any spelling PEP 503 folds together)."""
        return list(self._by_package.get(canonicalize_name(name), ()))

    def npm_advisories_for(self, name: str) -> list[Advisory[SemVer]]:
        """The npm advisories of ``name``, spelled exactly as npm spells it."""
        return list(self._npm.get(name, ()))

    def count(self, ecosystem: Ecosystem = ECOSYSTEM) -> int:
        """How many distinct advisories (by id) concern packages of ``ecosystem``."""
        index: Mapping[str, Iterable[Advisory[Any]]] = (
            self._npm if ecosystem == NPM else self._by_package
        )
        return len({a.id for items in index.values() for a in items})

    def __len__(self) -> int:
        """How many distinct PyPI advisories (by id) the database holds (``count`` for npm)."""
        return self.count(ECOSYSTEM)


def read_requirements(root: Path) -> list[str]:
    """The requirement lines of ``requirements.txt`` at the plugin source root, if any.

    Comments, blank lines and options that do not name a package (``--index-url``, ``-c``,
    ``--hash`` after a requirement) are dropped and continuation lines joined. ``-r`` files
    inside the plugin source are followed, as pip would. A line that installs something this
    module cannot follow (``-e``, a ``-r`` file outside the source) is kept as written so that
    ``check`` reports it unchecked rather than it disappearing.
    """
    top = root / REQUIREMENTS_FILE
    if not _inside(top, root):
        return []
    return list(_requirement_lines(top, root, seen=set()))


def check(requirements: Iterable[str], db: AdvisoryDatabase) -> list[DependencyReport]:
    """One report per requirement, in the order given."""
    return [_check_one(text, db) for text in requirements]


def check_pins(pins: Iterable[PackagePin], db: AdvisoryDatabase | None) -> list[DependencyReport]:
    """One report per installed package, in the order given; every one ``unchecked`` when
    there is no database.

    The report's ``requirement`` is how the ecosystem writes the pin (``pyyaml==5.3``,
    ``lodash@4.17.20``); its ``name`` is normalised for PyPI, as written for npm.
    """
    return [_check_pin(pin, db) for pin in pins]


def parse_npm_version(text: str) -> SemVer | None:
    """A version as npm writes it in a lockfile or an advisory, or None when it is not one.

    npm's registry only holds semver versions; a lockfile's ``version`` can also be a git
    reference, a URL or a ``file:`` path, which name no release and so cannot be checked.
    A leading ``v`` or ``=`` is dropped, as npm's own ``semver.clean`` does.
    """
    cleaned = text.strip().lstrip("=v").strip()
    try:
        return SemVer.parse(cleaned)
    except VersionError:
        return None


_COMMENT = re.compile(r"(^|\s+)#.*$")
_INCLUDE = re.compile(r"^(-r|--requirement)(?:\s*=?\s*)(?P<target>\S+)$")
_EDITABLE = re.compile(r"^(-e|--editable)\b")


def _inside(path: Path, root: Path) -> bool:
    """A regular file within ``root``; symlinks are not copied into the image either."""
    if path.is_symlink() or not path.is_file():
        return False
    return path.resolve().is_relative_to(root.resolve())


def _requirement_lines(path: Path, root: Path, *, seen: set[Path]) -> Iterator[str]:
    seen.add(path.resolve())
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    for line in _logical_lines(text):
        if not line.startswith("-"):
            # Per-requirement options (--hash=...) start at the first token with a dash.
            tokens = line.split(" ")
            cut = next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))
            requirement = " ".join(tokens[:cut]).strip()
            if requirement:
                yield requirement
            continue
        include = _INCLUDE.match(line)
        if include:
            target = path.parent / include["target"]
            if target.resolve() in seen:
                continue
            if _inside(target, root):
                yield from _requirement_lines(target, root, seen=seen)
            else:
                yield line
        elif _EDITABLE.match(line):
            yield line


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = _COMMENT.sub("", pending + raw).strip()
        pending = ""
        if line:
            yield line
    if pending:
        line = _COMMENT.sub("", pending).strip()
        if line:
            yield line


def _check_one(text: str, db: AdvisoryDatabase) -> DependencyReport:
    text = text.strip()

    def unchecked(reason: str, name: str | None = None) -> DependencyReport:
        return DependencyReport(text, name, None, "unchecked", reason=reason)

    if _EDITABLE.match(text):
        return unchecked("an editable install has no released version to check")
    if text.startswith("-"):
        return unchecked("a pip option, not a requirement this check can follow")
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        return unchecked(f"not a PEP 508 requirement: {str(exc).splitlines()[0]}")
    name = canonicalize_name(req.name)
    if req.url:
        return unchecked("installed from a URL, not a released version", name)
    pins = {
        s.version
        for s in req.specifier
        if s.operator == "===" or (s.operator == "==" and not s.version.endswith(".*"))
    }
    if not pins:
        if not req.specifier:
            return unchecked("no version pinned: the build would pick one", name)
        return unchecked(f"not pinned to one version ({req.specifier})", name)
    try:
        versions = {Version(pin) for pin in pins}
    except InvalidVersion:
        written = ", ".join(sorted(pins))
        return unchecked(f"pinned to a version PEP 440 cannot order ({written})", name)
    if len(versions) > 1:
        return unchecked(f"pinned to more than one version ({req.specifier})", name)
    pin = min(pins)  # ==1.0,==1.0.0 is one version written twice
    version = versions.pop()
    if not req.specifier.contains(pin, prereleases=True):
        return unchecked(f"no version satisfies {req.specifier}", name)

    matches = _matches(db.advisories_for(name), version)
    status: DependencyStatus = "vulnerable" if matches else "clean"
    return DependencyReport(text, name, pin, status, matches)


def _matches(advisories: Iterable[Advisory[V]], version: V) -> tuple[AdvisoryMatch, ...]:
    matches: list[AdvisoryMatch] = []
    seen: set[str] = set()
    for item in sorted(advisories, key=attrgetter("id")):
        # One vulnerability is often published under several ids that alias each other.
        if item.id in seen or not item.affects(version):
            continue
        seen.add(item.id)
        seen.update(item.aliases)
        matches.append(item.match(version))
    return tuple(matches)


def _check_pin(pin: PackagePin, db: AdvisoryDatabase | None) -> DependencyReport:
    def report(
        name: str,
        requirement: str,
        status: DependencyStatus,
        matches: tuple[AdvisoryMatch, ...] = (),
        reason: str | None = None,
    ) -> DependencyReport:
        checked = pin.version if status != "unchecked" else None
        return DependencyReport(
            requirement,
            name,
            checked,
            status,
            matches,
            reason,
            ecosystem=pin.ecosystem,
            locations=pin.locations,
        )

    if db is None:
        name = canonicalize_name(pin.name) if pin.ecosystem == ECOSYSTEM else pin.name
        written = (
            f"{name}=={pin.version}" if pin.ecosystem == ECOSYSTEM else f"{name}@{pin.version}"
        )
        return report(name, written, "unchecked", reason=_NO_DATABASE)
    if pin.ecosystem == NPM:
        requirement = f"{pin.name}@{pin.version}"
        semver = parse_npm_version(pin.version)
        if semver is None:
            reason = f"{pin.version!r} is not a released npm version (semver) to check"
            return report(pin.name, requirement, "unchecked", reason=reason)
        found = _matches(db.npm_advisories_for(pin.name), semver)
        return report(pin.name, requirement, "vulnerable" if found else "clean", found)
    name = canonicalize_name(pin.name)
    requirement = f"{name}=={pin.version}"
    try:
        version = Version(pin.version)
    except InvalidVersion:
        reason = f"{pin.version!r} is not a version PEP 440 can order"
        return report(name, requirement, "unchecked", reason=reason)
    found = _matches(db.advisories_for(name), version)
    return report(name, requirement, "vulnerable" if found else "clean", found)


class _RecordError(ValueError):
    pass


@dataclass(frozen=True)
class _EcosystemRules(Generic[V]):
    """How one ecosystem's records are read: its name in OSV, names, versions."""

    name: Ecosystem
    normalise: Callable[[str], str]
    version: Callable[[str], V | None]
    floor: V  # sorts before every version, for OSV's "introduced": "0"


def _pep440(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


_PYPI = _EcosystemRules[Version](ECOSYSTEM, canonicalize_name, _pep440, Version("0"))
_NPM = _EcosystemRules[SemVer](NPM, str, parse_npm_version, SemVer(0, 0, 0, ("0",)))


def _parse_record(record: object, rules: _EcosystemRules[V]) -> Iterator[tuple[str, Advisory[V]]]:
    """(package name, advisory) for each package of ``rules``' ecosystem the record affects."""
    if not isinstance(record, dict):
        raise _RecordError("the top level is not an object")
    osv_id = record.get("id")
    if not isinstance(osv_id, str) or not osv_id:
        raise _RecordError("no string 'id'")
    if record.get("withdrawn"):
        return
    summary = record.get("summary")
    if not isinstance(summary, str):
        details = record.get("details")
        summary = details.strip().splitlines()[0] if isinstance(details, str) and details else ""
    aliases = tuple(a for a in _list(record, "aliases") if isinstance(a, str))
    top_severity = _severity(record)

    per_package: dict[str, tuple[list[_Range[V]], set[str], list[AdvisorySeverity | None]]] = {}
    for affected in _list(record, "affected"):
        if not isinstance(affected, dict):
            raise _RecordError("an 'affected' entry is not an object")
        package = affected.get("package")
        if not isinstance(package, dict):
            raise _RecordError("an 'affected' entry has no 'package' object")
        name = package.get("name")
        if package.get("ecosystem") != rules.name or not isinstance(name, str):
            continue
        ranges, versions, severities = per_package.setdefault(
            rules.normalise(name), ([], set(), [])
        )
        for raw_range in _list(affected, "ranges"):
            parsed = _parse_range(raw_range, rules)
            if parsed is not None:
                ranges.append(parsed)
        versions.update(v for v in _list(affected, "versions") if isinstance(v, str))
        severities.append(_severity(affected))

    for name, (ranges, versions, severities) in per_package.items():
        severity = top_severity or next((s for s in severities if s), None)
        listed = (rules.version(v) for v in versions)
        yield (
            name,
            Advisory(
                id=osv_id,
                summary=summary,
                severity=severity,
                aliases=aliases,
                ranges=tuple(ranges),
                versions=frozenset(v for v in listed if v is not None),
            ),
        )


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _RecordError(f"'{key}' is not a list")
    return value


_EVENT_ORDER = {"introduced": 0, "last_affected": 1, "fixed": 2}


def _parse_range(raw: object, rules: _EcosystemRules[V]) -> _Range[V] | None:
    if not isinstance(raw, dict):
        raise _RecordError("a range is not an object")
    # GIT ranges need the repository's history; the versions list covers those records.
    if raw.get("type") not in ("ECOSYSTEM", "SEMVER"):
        return None
    events: list[tuple[V | None, str]] = []
    limits: list[V] = []
    unlimited = False
    for event in _list(raw, "events"):
        if not isinstance(event, dict):
            raise _RecordError("an event is not an object")
        for kind, value in event.items():
            if kind == "introduced" and value == "0":
                events.append((None, kind))
            elif kind == "limit" and value == "*":
                unlimited = True
            elif kind in _EVENT_ORDER or kind == "limit":
                # A version the ecosystem cannot read is skipped: it matches nothing.
                parsed = rules.version(value) if isinstance(value, str) else None
                if parsed is None:
                    continue
                if kind == "limit":
                    limits.append(parsed)
                else:
                    events.append((parsed, kind))
    floor = rules.floor
    events.sort(
        key=lambda e: (e[0] is not None, floor if e[0] is None else e[0], _EVENT_ORDER[e[1]])
    )
    return _Range(tuple(events), () if unlimited else tuple(limits))


_SEVERITY_WORDS: dict[str, AdvisorySeverity] = {
    "LOW": "LOW",
    "MODERATE": "MEDIUM",  # GitHub's word
    "MEDIUM": "MEDIUM",
    "HIGH": "HIGH",
    "CRITICAL": "CRITICAL",
}


def _severity(obj: dict[str, Any]) -> AdvisorySeverity | None:
    """From ``database_specific.severity`` (GitHub's word), else a CVSS v3 vector's score."""
    specific = obj.get("database_specific")
    if isinstance(specific, dict):
        word = specific.get("severity")
        if isinstance(word, str) and word.upper() in _SEVERITY_WORDS:
            return _SEVERITY_WORDS[word.upper()]
    for entry in _list(obj, "severity"):
        if isinstance(entry, dict) and entry.get("type") == "CVSS_V3":
            score = _cvss3_base_score(str(entry.get("score", "")))
            if score is not None:
                return _rating(score)
    return None


def _rating(score: float) -> AdvisorySeverity | None:
    # CVSS v3.1 qualitative scale; 0.0 is "None".
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    if score > 0.0:
        return "LOW"
    return None


_CVSS3_WEIGHTS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
# Privileges required weigh more when the scope changes.
_CVSS3_PR = {False: {"N": 0.85, "L": 0.62, "H": 0.27}, True: {"N": 0.85, "L": 0.68, "H": 0.5}}


def _cvss3_base_score(vector: str) -> float | None:
    """The CVSS v3.x base score of a vector string (specification 3.1, section 7.1)."""
    prefix, _, rest = vector.partition("/")
    if not prefix.startswith("CVSS:3."):
        return None
    metrics = dict(part.partition(":")[::2] for part in rest.split("/"))
    try:
        changed = {"U": False, "C": True}[metrics["S"]]
        w = {key: table[metrics[key]] for key, table in _CVSS3_WEIGHTS.items()}
        privileges = _CVSS3_PR[changed][metrics["PR"]]
    except KeyError:
        return None
    iss = 1 - (1 - w["C"]) * (1 - w["I"]) * (1 - w["A"])
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    exploitability = 8.22 * w["AV"] * w["AC"] * privileges * w["UI"]
    total = (impact + exploitability) * (1.08 if changed else 1.0)
    return _roundup(min(total, 10.0))


def _roundup(value: float) -> float:
    # The specification's Roundup (3.1, Appendix A), which avoids float artefacts.
    scaled = round(value * 100_000)
    if scaled % 10_000 == 0:
        return scaled / 100_000
    return (math.floor(scaled / 10_000) + 1) / 10.0
