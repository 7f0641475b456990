"""Semantic versions (semver 2.0.0) and the npm-style ranges manifests use.

Part of the manifest contract (``version``, ``dependencies[].version``, ``compatibility``), so
the SDK owns it and the orchestrator imports it. Standard library only.

``packaging`` implements PEP 440, whose ordering and syntax differ from semver (``1.0a1``
is valid there, ``1.0.0-alpha.1`` sorts differently), so plugin versions get their own type.
Ranges accept ``^1.2``, ``~1.2.3``, comparators (``>=0.1,<1`` or ``>=0.1 <1``), ``1.x``,
``*`` and ``a || b``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")
_COMPARATOR = re.compile(r"^(\^|~|>=|<=|>|<|=)?\s*(.+)$")


class VersionError(ValueError):
    """A version or range that does not parse."""


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _SEMVER.fullmatch(text)
        if not m:
            raise VersionError(f"{text!r} is not a semantic version (expected MAJOR.MINOR.PATCH)")
        pre = tuple(m.group(4).split(".")) if m.group(4) else ()
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre)

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its prereleases; numeric identifiers sort before alphanumeric.
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{'.'.join(self.prerelease)}" if self.prerelease else core


@dataclass(frozen=True)
class _Bound:
    op: str  # one of >= > <= < =
    version: Version

    def admits(self, v: Version) -> bool:
        if self.op == ">=":
            return v >= self.version
        if self.op == ">":
            return v > self.version
        if self.op == "<=":
            return v <= self.version
        if self.op == "<":
            return v < self.version
        return v == self.version


def _partial(text: str) -> tuple[list[int | None], tuple[str, ...]]:
    m = _PARTIAL.fullmatch(text)
    if not m:
        raise VersionError(f"{text!r} is not a version")
    parts: list[int | None] = []
    for g in m.group(1, 2, 3):
        parts.append(None if g is None or g in "xX*" else int(g))
    # Once a part is a wildcard, every later part is too.
    for i in range(1, 3):
        if parts[i - 1] is None:
            parts[i] = None
    pre = tuple(m.group(4).split(".")) if m.group(4) else ()
    return parts, pre


def _bounds(op: str, text: str) -> list[_Bound]:
    (major, minor, patch), pre = _partial(text)
    if major is None:
        return [] if op in ("", "=", ">=", "<=", "^", "~") else [_Bound("<", Version(0, 0, 0))]
    lo = Version(major, minor or 0, patch or 0, pre)
    if op in ("", "="):
        if minor is None:
            return [_Bound(">=", lo), _Bound("<", Version(major + 1, 0, 0, ("0",)))]
        if patch is None:
            return [_Bound(">=", lo), _Bound("<", Version(major, minor + 1, 0, ("0",)))]
        return [_Bound("=", lo)]
    if op == "^":
        if major > 0 or minor is None:
            hi = Version(major + 1, 0, 0, ("0",))
        elif minor > 0 or patch is None:
            hi = Version(0, minor + 1, 0, ("0",))
        else:
            hi = Version(0, 0, patch + 1, ("0",))
        return [_Bound(">=", lo), _Bound("<", hi)]
    if op == "~":
        hi = (
            Version(major + 1, 0, 0, ("0",))
            if minor is None
            else Version(major, minor + 1, 0, ("0",))
        )
        return [_Bound(">=", lo), _Bound("<", hi)]
    if op in (">", "<=") and (minor is None or patch is None):
        # ">1" means ">=2.0.0"; "<=1.2" means "<1.3.0".
        nxt = (
            Version(major + 1, 0, 0, ("0",))
            if minor is None
            else Version(major, minor + 1, 0, ("0",))
        )
        return [_Bound(">=" if op == ">" else "<", nxt)]
    return [_Bound(op, lo)]


@dataclass(frozen=True)
class VersionRange:
    text: str
    alternatives: tuple[tuple[_Bound, ...], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        if not text or not text.strip():
            raise VersionError("empty version range")
        alternatives = []
        for alt in text.split("||"):
            tokens = [t for t in re.split(r"[\s,]+", alt.strip()) if t]
            # Join an operator written apart from its version (">= 1.0").
            merged: list[str] = []
            for tok in tokens:
                if merged and merged[-1] in ("^", "~", ">=", "<=", ">", "<", "="):
                    merged[-1] += tok
                else:
                    merged.append(tok)
            if not merged:
                raise VersionError(f"{text!r}: empty alternative")
            bounds: list[_Bound] = []
            for tok in merged:
                m = _COMPARATOR.fullmatch(tok)
                if not m:
                    raise VersionError(f"{text!r}: cannot read {tok!r}")
                try:
                    bounds.extend(_bounds(m.group(1) or "", m.group(2)))
                except VersionError as exc:
                    raise VersionError(f"{text!r}: {exc}") from None
            alternatives.append(tuple(bounds))
        return cls(text.strip(), tuple(alternatives))

    def admits(self, version: Version | str) -> bool:
        v = Version.parse(version) if isinstance(version, str) else version
        for bounds in self.alternatives:
            if all(b.admits(v) for b in bounds):
                # Prereleases only match a range that names a prerelease of the same core.
                if v.prerelease and not any(
                    b.version.prerelease
                    and b.version.prerelease != ("0",)
                    and (b.version.major, b.version.minor, b.version.patch)
                    == (v.major, v.minor, v.patch)
                    for b in bounds
                ):
                    continue
                return True
        return False

    def __str__(self) -> str:
        return self.text
