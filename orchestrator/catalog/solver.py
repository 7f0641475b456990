"""The catalog's dependency solver: which version of every plugin an install or upgrade needs.

:func:`resolve` takes what the catalog offers (per plugin, its versions, each with the ranges of
the plugins it depends on, a ``yanked`` flag and whether it is ``compatible`` with this
orchestrator, which is decided elsewhere), what is installed, and what was asked for. It picks
the newest compatible versions for the whole set: the requested plugins, every dependency, and
the installed plugins, whose ranges must keep holding. Or it raises :class:`ResolutionError`
saying which plugin wants which range of which. It does no I/O: the catalog is a callable the
caller backs with the database or an HTTP client, asked once per plugin id per call.

The rules, so that an operator can predict the answer:

- Newest first. An installed plugin that was not requested keeps its version; with
  ``allow_upgrade=True`` it may move up (never down), and only when the set needs it to.
- An installed plugin that stays holds its ranges: upgrading X past the range of an installed
  dependent D that is not changing is refused, naming D and its range (every such D).
- A yanked version is never chosen to satisfy a range, only for a request that names that exact
  version (``"1.2.0"`` or ``"=1.2.0"``), and then the result carries a warning. A version that is
  not ``compatible`` is never chosen. When either is why nothing matches, the error says so.
- An optional dependency constrains only a plugin that is in the set anyway.
- Cycles are refused after the choice, with their path (``a -> b -> a``): a cycle is the
  authors' mistake to fix, and dodging it by picking older versions would hide it.
- Same input, same output: versions, dependencies and ties are always taken in one order.

The algorithm is PubGrub (Natalie Weizenbaum's, as in Dart's pub, uv and Poetry): unit
propagation over incompatibilities, newest-first decisions, and on a conflict, resolution back to
a learned incompatibility that prunes every branch with the same cause. Since every version the
solver may pick is listed by the catalog, a set of versions is a bit mask over one plugin's known
versions, with one more bit for "not in the set", which makes the set algebra a few integer
operations and keeps npm's range rules (prereleases included) in :class:`VersionRange` alone.

Why not resolvelib, the solver pip uses (it was tried first, with a provider over the same
model): on the benchmark's catalog (``bench/catalog_solver.py``: 200 plugins, 5-20 versions
each, 2-5 caret dependencies per version, chains over 60 deep, most newest versions unable to
go together) its backjumping found no set within 30,000 rounds (22 s), where this solver finds
one after ~160 conflicts in ~0.2 s of CPU, and proves an impossible request impossible in about
as long: backtracking that learns nothing meets the same conflict again on every branch.
PubGrub's learned incompatibilities are also what the error explains. ``max_steps`` bounds the
search all the same (about 2 s at the default), and a search that stops says so.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.domain.errors import Conflict, InvalidInput
from orchestrator.domain.versions import Version, VersionError, VersionRange

if TYPE_CHECKING:
    from orchestrator.domain.manifest import Manifest

__all__ = [
    "DEFAULT_MAX_STEPS",
    "PluginVersion",
    "Resolution",
    "ResolutionError",
    "ResolvedPlugin",
    "Source",
    "resolve",
]

# A step is one decision or one conflict. A solvable set of n plugins takes about n decisions
# plus its conflicts; the bound stops a pathological catalog long before it costs seconds.
DEFAULT_MAX_STEPS = 20_000


@dataclass(frozen=True)
class PluginVersion:
    """One version of a plugin as the solver sees it, from the catalog or the installed set.

    ``dependencies`` maps a plugin id to its npm-style range; the ids in ``optional`` are needed
    only when present. ``yanked`` and ``compatible`` matter for catalog versions only: the
    installed version is what runs, so it stays usable.
    """

    version: Version
    dependencies: Mapping[str, str] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()
    yanked: bool = False
    compatible: bool = True

    @classmethod
    def of(
        cls,
        version: str,
        dependencies: Mapping[str, str] | None = None,
        *,
        optional: Iterable[str] = (),
        yanked: bool = False,
        compatible: bool = True,
    ) -> PluginVersion:
        return cls(
            Version.parse(version),
            dict(dependencies or {}),
            frozenset(optional),
            yanked,
            compatible,
        )

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, *, yanked: bool = False, compatible: bool = True
    ) -> PluginVersion:
        return cls(
            Version.parse(manifest.version),
            {d.id: d.version for d in manifest.dependencies},
            frozenset(d.id for d in manifest.dependencies if d.optional),
            yanked,
            compatible,
        )


Source = Callable[[str], Iterable[PluginVersion]]
"""What the catalog offers of one plugin id: its versions, in any order; none if it is unknown."""

Action = Literal["keep", "install", "upgrade", "downgrade"]


@dataclass(frozen=True)
class ResolvedPlugin:
    plugin_id: str
    version: Version
    installed: Version | None  # the version installed before this resolution, if any
    requested: bool
    dependencies: tuple[str, ...]  # the plugins of the set this version depends on

    @property
    def action(self) -> Action:
        if self.installed is None:
            return "install"
        if self.version == self.installed:
            return "keep"
        return "upgrade" if self.version > self.installed else "downgrade"


@dataclass(frozen=True)
class Resolution:
    """The whole set: every plugin with its chosen version, installed ones that stay included
    (``action == "keep"``), and ``order`` with dependencies before their dependents."""

    plugins: Mapping[str, ResolvedPlugin]
    order: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[ResolvedPlugin, ...]:
        """What must be installed, upgraded or downgraded, in install order."""
        return tuple(self.plugins[p] for p in self.order if self.plugins[p].action != "keep")


class ResolutionError(Conflict):
    """No set satisfies every range. ``code`` is ``dependency_conflict``, ``dependency_cycle``
    or ``dependency_missing``; ``details`` is a list of dicts, each with a ``message`` and the
    same facts as data (the plugin, who wants which range of it, what is installed)."""

    code = "dependency_conflict"


# -- what the solver reasons about ------------------------------------------------------------

Kind = Literal["request", "dependency", "keep", "installed"]
_ROOT = "<the request>"  # not a plugin id: ids are reverse-DNS names


@dataclass(frozen=True)
class _Requirement:
    """What something wants of ``plugin_id``: a range (a request or a dependency), or for an
    installed plugin, to stay at ``version`` (keep) or not go below it (installed)."""

    plugin_id: str
    kind: Kind
    text: str = ""
    version: Version | None = None  # keep, installed; for a request, the version it names exactly
    optional: bool = False

    def admits(self, version: Version) -> bool:
        if self.kind == "keep":
            return version == self.version
        if self.kind == "installed":
            assert self.version is not None
            return version >= self.version
        return _admits(self.text, version)

    @property
    def wanted(self) -> str:
        if self.kind == "keep":
            return f"={self.version}"
        if self.kind == "installed":
            return f">={self.version}"
        return self.text


# A catalog repeats the same few ranges thousands of times, and one orchestrator resolves
# against the same catalog again and again: remember, within bounds.
@lru_cache(maxsize=4096)
def _parse_range(text: str) -> VersionRange:
    return VersionRange.parse(text)


@lru_cache(maxsize=65536)
def _admits(text: str, version: Version) -> bool:
    return _parse_range(text).admits(version)


def _exact(text: str) -> Version | None:
    """The version a request names exactly (``1.2.0``, ``=1.2.0``), or None for a range."""
    try:
        return Version.parse(text.strip().removeprefix("=").strip())
    except VersionError:
        return None


@dataclass(frozen=True)
class _Candidate:
    plugin_id: str
    record: PluginVersion
    installed: bool
    unusable: str | None  # why it may not be chosen, or None

    @property
    def version(self) -> Version:
        return self.record.version


class _Package:
    """The known versions of one plugin, newest first: version ``i`` is bit ``i`` of a mask, and
    the bit after the last one stands for "not in the set"."""

    def __init__(self, plugin_id: str, candidates: Sequence[_Candidate]) -> None:
        self.plugin_id = plugin_id
        self.candidates = tuple(candidates)
        self.absent = 1 << len(self.candidates)
        self.versions = self.absent - 1
        self.full = self.versions | self.absent
        self.unusable = sum(1 << i for i, c in enumerate(self.candidates) if c.unusable)
        self._masks: dict[_Requirement, int] = {}

    def mask(self, req: _Requirement) -> int:
        """The versions ``req`` admits."""
        found = self._masks.get(req)
        if found is None:
            found = sum(1 << i for i, c in enumerate(self.candidates) if req.admits(c.version))
            self._masks[req] = found
        return found

    def listed(self, mask: int) -> list[_Candidate]:
        return [c for i, c in enumerate(self.candidates) if mask >> i & 1]

    def describe(self, mask: int) -> str:
        """``a 1.4.0``, ``a 1.3.0 and 1.4.0``, ``every version of a``..., for explanations."""
        versions = [str(c.version) for c in reversed(self.listed(mask))]
        if len(versions) > 1 and mask & self.versions == self.versions:
            return f"every version of {self.plugin_id}"
        if len(versions) > 3:
            return f"{self.plugin_id} {versions[0]} to {versions[-1]} ({len(versions)} versions)"
        if len(versions) > 1:
            return f"{self.plugin_id} {', '.join(versions[:-1])} and {versions[-1]}"
        installed = " (installed)" if versions and self.listed(mask)[0].installed else ""
        return f"{self.plugin_id} {versions[0]}{installed}" if versions else self.plugin_id


@dataclass(frozen=True)
class _Fact:
    """Where an incompatibility that was not derived comes from: ``who`` (versions of a plugin,
    or the request) wants ``req``; or the versions in ``who`` of ``plugin_id`` are unusable."""

    kind: Literal["root", "dependency", "unusable"]
    plugin_id: str
    who: int = 0
    req: _Requirement | None = None


@dataclass(eq=False)
class _Incompatibility:
    """Terms that cannot all hold: plugin id -> the versions (and maybe absence) it stands for."""

    terms: dict[str, int]
    cause: _Fact | tuple[_Incompatibility, _Incompatibility]

    def facts(self) -> Iterator[_Fact]:
        seen: set[int] = set()
        todo: list[_Incompatibility] = [self]
        while todo:
            inc = todo.pop()
            if id(inc) in seen:
                continue
            seen.add(id(inc))
            if isinstance(inc.cause, _Fact):
                yield inc.cause
            else:
                todo.extend(inc.cause)


@dataclass(eq=False)
class _Assignment:
    plugin_id: str
    mask: int
    level: int
    index: int
    cause: _Incompatibility | None  # None: a decision


class _Partial:
    """The partial solution: decisions and what follows from them, in order."""

    def __init__(self, packages: Mapping[str, _Package]) -> None:
        self._packages = packages
        self.assignments: list[_Assignment] = []
        self._by_plugin: dict[str, list[_Assignment]] = {}
        self.masks: dict[str, int] = {}
        self.decisions: dict[str, int] = {}  # plugin id -> bit of the chosen version
        self.undecided: set[str] = set()  # in the set (a positive term), no version chosen yet

    @property
    def level(self) -> int:
        return len(self.decisions)

    def mask(self, plugin_id: str) -> int:
        found = self.masks.get(plugin_id)
        return self._packages[plugin_id].full if found is None else found

    def _assign(self, plugin_id: str, mask: int, cause: _Incompatibility | None) -> None:
        a = _Assignment(plugin_id, mask, self.level, len(self.assignments), cause)
        self.assignments.append(a)
        self._by_plugin.setdefault(plugin_id, []).append(a)
        self.masks[plugin_id] = have = self.mask(plugin_id) & mask
        self._track(plugin_id, have)

    def _track(self, plugin_id: str, have: int | None) -> None:
        absent = self._packages[plugin_id].absent
        if have is None or have & absent or plugin_id in self.decisions:
            self.undecided.discard(plugin_id)
        else:
            self.undecided.add(plugin_id)

    def derive(self, plugin_id: str, mask: int, cause: _Incompatibility) -> None:
        self._assign(plugin_id, mask, cause)

    def decide(self, plugin_id: str, bit: int) -> None:
        self.decisions[plugin_id] = bit
        self._assign(plugin_id, 1 << bit, None)

    def satisfier(self, plugin_id: str, mask: int) -> _Assignment:
        """The first assignment after which the solution implies ``plugin_id`` in ``mask``."""
        acc = self._packages[plugin_id].full
        for a in self._by_plugin[plugin_id]:
            acc &= a.mask
            if acc & ~mask == 0:
                return a
        raise AssertionError(f"nothing satisfies the term on {plugin_id}")

    def backtrack(self, level: int) -> None:
        touched = set()
        while self.assignments and self.assignments[-1].level > level:
            a = self.assignments.pop()
            self._by_plugin[a.plugin_id].pop()
            touched.add(a.plugin_id)
            if a.cause is None:
                del self.decisions[a.plugin_id]
        for plugin_id in touched:
            acc = self._packages[plugin_id].full
            for a in self._by_plugin[plugin_id]:
                acc &= a.mask
            if self._by_plugin[plugin_id]:
                self.masks[plugin_id] = acc
            else:
                del self.masks[plugin_id]
            self._track(plugin_id, self.masks.get(plugin_id))


class _GaveUp(Exception):
    def __init__(self, steps: int, last: _Incompatibility | None) -> None:
        self.steps = steps
        self.last = last


class _Unsolvable(Exception):
    def __init__(self, incompatibility: _Incompatibility) -> None:
        self.incompatibility = incompatibility


class _Solver:
    def __init__(
        self,
        source: Source,
        installed: Mapping[str, PluginVersion],
        roots: Sequence[_Requirement],
        *,
        requested: frozenset[str],
        yanked_ok: frozenset[tuple[str, Version]],
        max_steps: int,
    ) -> None:
        self._source = source
        self._installed = installed
        self._roots = roots
        self._requested = requested
        self._yanked_ok = yanked_ok
        self._max_steps = max_steps
        self._steps = 0
        self._last_conflict: _Incompatibility | None = None
        root = _Candidate(_ROOT, PluginVersion(Version(0, 0, 0)), installed=False, unusable=None)
        self.packages: dict[str, _Package] = {_ROOT: _Package(_ROOT, [root])}
        self._found: dict[str, int] = {_ROOT: 0}  # the order the search met each plugin in
        self._incompatibilities: dict[str, list[_Incompatibility]] = {}
        self._dependencies: dict[tuple[str, str, str, bool], _Incompatibility] = {}
        self.partial = _Partial(self.packages)

    # -- the catalog, loaded as the search reaches it

    def package(self, plugin_id: str) -> _Package:
        found = self.packages.get(plugin_id)
        if found is None:
            found = self.packages[plugin_id] = self._load(plugin_id)
            self._found[plugin_id] = len(self._found)
            if found.unusable:
                self._add(
                    _Incompatibility({plugin_id: found.unusable}, _Fact("unusable", plugin_id))
                )
        return found

    def _load(self, plugin_id: str) -> _Package:
        by_version: dict[Version, _Candidate] = {}
        mine = self._installed.get(plugin_id)
        if mine is not None:  # the installed record wins over the catalog's copy
            by_version[mine.version] = _Candidate(plugin_id, mine, installed=True, unusable=None)
        for record in self._source(plugin_id):
            if record.version not in by_version:
                by_version[record.version] = _Candidate(
                    plugin_id, record, installed=False, unusable=self._unusable(plugin_id, record)
                )
        return _Package(plugin_id, sorted(by_version.values(), key=lambda c: c.version)[::-1])

    def _unusable(self, plugin_id: str, record: PluginVersion) -> str | None:
        if not record.compatible:
            return "not compatible with this orchestrator"
        if record.yanked and (plugin_id, record.version) not in self._yanked_ok:
            return "yanked"
        for text in record.dependencies.values():
            try:
                _parse_range(text)
            except VersionError:
                return f"its dependency range {text!r} does not parse"
        return None

    def _add(self, inc: _Incompatibility) -> None:
        if not all(inc.terms.values()):
            return  # a term no assignment meets: it can never hold (a plugin in its own range)
        for plugin_id in inc.terms:
            self._incompatibilities.setdefault(plugin_id, []).append(inc)

    def _incompatibility(
        self, terms: dict[str, int], cause: _Fact | tuple[_Incompatibility, _Incompatibility]
    ) -> _Incompatibility:
        # A term that every assignment satisfies says nothing: leave it out.
        kept = {p: m for p, m in terms.items() if m != self.packages[p].full}
        return _Incompatibility(kept, cause)

    def _requirements_of(self, plugin_id: str, bit: int) -> Iterator[_Incompatibility]:
        """The incompatibilities ``plugin_id``'s version ``bit`` depends on: one per dependency,
        each covering every version of the plugin that has the same one."""
        if plugin_id == _ROOT:
            for i, req in enumerate(self._roots):
                key = (_ROOT, req.plugin_id, str(i), False)
                if key not in self._dependencies:
                    dep = self.package(req.plugin_id)
                    terms = {_ROOT: 1, req.plugin_id: dep.full & ~dep.mask(req)}
                    fact = _Fact("root", _ROOT, 1, req)
                    self._dependencies[key] = inc = self._incompatibility(terms, fact)
                    self._add(inc)
                yield self._dependencies[key]
            return
        pkg = self.packages[plugin_id]
        record = pkg.candidates[bit].record
        for dep_id, text in sorted(record.dependencies.items()):
            optional = dep_id in record.optional
            key = (plugin_id, dep_id, text, optional)
            if key not in self._dependencies:
                same = sum(
                    1 << i
                    for i, c in enumerate(pkg.candidates)
                    if c.record.dependencies.get(dep_id) == text
                    and (dep_id in c.record.optional) == optional
                )
                dep = self.package(dep_id)
                req = _Requirement(dep_id, "dependency", text, optional=optional)
                # A required dependency is missing when absent too; an optional one is not.
                outside = (dep.versions if optional else dep.full) & ~dep.mask(req)
                fact = _Fact("dependency", plugin_id, same, req)
                terms = {plugin_id: same}
                terms[dep_id] = terms.get(dep_id, dep.full) & outside
                self._dependencies[key] = inc = self._incompatibility(terms, fact)
                self._add(inc)
            yield self._dependencies[key]

    # -- PubGrub

    def solve(self) -> dict[str, _Candidate]:
        self._add(_Incompatibility({_ROOT: self.packages[_ROOT].absent}, _Fact("root", _ROOT)))
        nxt: str | None = _ROOT
        while nxt is not None:
            self._propagate(nxt)
            nxt = self._decide()
        return {
            p: self.packages[p].candidates[bit]
            for p, bit in sorted(self.partial.decisions.items())
            if p != _ROOT
        }

    def _step(self) -> None:
        self._steps += 1
        if self._steps > self._max_steps:
            raise _GaveUp(self._max_steps, self._last_conflict)

    def _propagate(self, start: str) -> None:
        changed = [start]
        while changed:
            plugin_id = changed.pop()
            for inc in reversed(self._incompatibilities.get(plugin_id, [])):
                result = self._propagate_one(inc)
                if result is _CONFLICT:
                    cause = self._resolve_conflict(inc)
                    derived = self._propagate_one(cause)
                    assert isinstance(derived, str)
                    changed = [derived]
                    break
                if isinstance(result, str) and result not in changed:
                    changed.append(result)

    def _propagate_one(self, inc: _Incompatibility) -> str | object | None:
        """Derive the one term of ``inc`` that is not yet known to hold, negated; or report a
        conflict when every term holds."""
        open_term: tuple[str, int] | None = None
        masks = self.partial.masks  # the hottest loop: no method calls
        for plugin_id, mask in inc.terms.items():
            have = masks.get(plugin_id)
            if have is None:
                have = self.packages[plugin_id].full
            if have & mask == 0:
                return None
            if have & ~mask:
                if open_term is not None:
                    return None
                open_term = (plugin_id, mask)
        if open_term is None:
            return _CONFLICT
        plugin_id, mask = open_term
        self.partial.derive(plugin_id, self.packages[plugin_id].full & ~mask, inc)
        return plugin_id

    def _resolve_conflict(self, inc: _Incompatibility) -> _Incompatibility:
        self._step()
        learned = False
        while not self._is_failure(inc):
            recent: _Assignment | None = None
            recent_id = ""
            difference = 0
            previous_level = 1
            for plugin_id, mask in inc.terms.items():
                satisfier = self.partial.satisfier(plugin_id, mask)
                if recent is None or recent.index < satisfier.index:
                    if recent is not None:
                        previous_level = max(previous_level, recent.level)
                    recent, recent_id, difference = satisfier, plugin_id, 0
                else:
                    previous_level = max(previous_level, satisfier.level)
                if recent_id == plugin_id:
                    # The satisfier alone may not imply the term: what earlier assignments
                    # added counts too.
                    difference = recent.mask & ~mask
                    if difference:
                        full = self.packages[plugin_id].full
                        earlier = self.partial.satisfier(plugin_id, full & ~difference)
                        previous_level = max(previous_level, earlier.level)
            assert recent is not None
            if previous_level < recent.level or recent.cause is None:
                self.partial.backtrack(previous_level)
                if learned:
                    self._add(inc)
                self._last_conflict = inc
                return inc
            terms = {p: m for p, m in inc.terms.items() if p != recent_id}
            for p, m in recent.cause.terms.items():
                if p != recent_id:
                    terms[p] = terms.get(p, self.packages[p].full) & m
            if difference:
                full = self.packages[recent_id].full
                terms[recent_id] = full & ~difference
            inc = self._incompatibility(terms, (inc, recent.cause))
            learned = True
        raise _Unsolvable(inc)

    def _is_failure(self, inc: _Incompatibility) -> bool:
        if not inc.terms:
            return True
        if len(inc.terms) == 1 and _ROOT in inc.terms:
            return inc.terms[_ROOT] & self.packages[_ROOT].absent == 0
        return False

    def _pick(self) -> str | None:
        # A plugin with one version left first (it is forced anyway), then in the order the
        # search met them: the requested plugins, then their dependencies, level by level, so
        # that what was asked for gets the newest versions. On the benchmark's catalog this
        # also solves about twice as fast as pub's fewest-versions-first.
        masks, found = self.partial.masks, self._found
        best = min(
            ((masks[p].bit_count() > 1, found[p], p) for p in self.partial.undecided),
            default=None,
        )
        return best[2] if best else None

    def _decide(self) -> str | None:
        """Choose a version of the next plugin (see ``_pick``), unless that version's own
        dependencies already conflict with the solution: either way, the plugin to propagate
        from next. None once every plugin the set needs has a version."""
        plugin_id = self._pick()
        if plugin_id is None:
            return None
        self._step()
        pkg = self.packages[plugin_id]
        allowed = self.partial.mask(plugin_id) & pkg.versions & ~pkg.unusable
        if not allowed:
            # Propagation keeps unusable versions out, so this is only a safeguard.
            self._add(
                _Incompatibility(
                    {plugin_id: self.partial.mask(plugin_id)}, _Fact("unusable", plugin_id)
                )
            )
            return plugin_id
        bit = (allowed & -allowed).bit_length() - 1  # the newest
        if plugin_id not in self._requested:
            # An installed plugin nobody asked for moves only when it must.
            for i, c in enumerate(pkg.candidates):
                if c.installed and allowed >> i & 1:
                    bit = i
        conflict = False
        for inc in self._requirements_of(plugin_id, bit):
            # Would this version, with what is already known, break one of its own needs?
            if all(
                (m >> bit & 1) if p == plugin_id else self.partial.mask(p) & ~m == 0
                for p, m in inc.terms.items()
            ):
                conflict = True
        if not conflict:
            self.partial.decide(plugin_id, bit)
        return plugin_id


_CONFLICT = object()


# -- the solver's entry point ----------------------------------------------------------------


def resolve(
    requests: Sequence[tuple[str, str]],
    *,
    source: Source,
    installed: Mapping[str, PluginVersion] | None = None,
    allow_upgrade: bool = False,
    allow_yanked: bool = True,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Resolution:
    """Choose a version of every plugin in ``requests`` (``(id, range)`` pairs), of their
    dependencies and of the installed plugins.

    ``allow_upgrade`` lets installed plugins that were not requested move up when the set needs
    it; ``allow_yanked`` lets a request that names one version exactly pick it though yanked.
    """
    installed = dict(installed or {})
    roots: list[_Requirement] = []
    yanked_ok: set[tuple[str, Version]] = set()
    for plugin_id, text in requests:
        try:
            _parse_range(text)
        except VersionError as exc:
            raise InvalidInput(
                f"cannot read the range {text!r} requested for {plugin_id}: {exc}",
                code="invalid_version_range",
                details=[{"plugin": plugin_id, "range": text}],
            ) from None
        exact = _exact(text)
        roots.append(_Requirement(plugin_id, "request", text.strip(), exact))
        if exact is not None and allow_yanked:
            yanked_ok.add((plugin_id, exact))
    requested = frozenset(plugin_id for plugin_id, _ in requests)
    for plugin_id in sorted(installed.keys() - requested):
        kind: Kind = "installed" if allow_upgrade else "keep"
        roots.append(_Requirement(plugin_id, kind, version=installed[plugin_id].version))

    solver = _Solver(
        source,
        installed,
        roots,
        requested=requested,
        yanked_ok=frozenset(yanked_ok),
        max_steps=max_steps,
    )
    try:
        chosen = solver.solve()
    except _Unsolvable as exc:
        raise _explain(solver, exc.incompatibility, requests, installed, allow_upgrade) from None
    except _GaveUp as exc:
        raise _explain(
            solver, exc.last, requests, installed, allow_upgrade, gave_up=exc.steps
        ) from None

    edges = {
        plugin_id: tuple(d for d in sorted(pick.record.dependencies) if d in chosen)
        for plugin_id, pick in chosen.items()
    }
    cycles = _cycles(edges)
    if cycles:
        raise _cycle_error(cycles, chosen)
    plugins = {
        plugin_id: ResolvedPlugin(
            plugin_id,
            pick.version,
            installed[plugin_id].version if plugin_id in installed else None,
            plugin_id in requested,
            edges[plugin_id],
        )
        for plugin_id, pick in chosen.items()
    }
    warnings = tuple(
        f"{pick.plugin_id} {pick.version} is yanked; it is chosen because the request names "
        "that version exactly"
        for pick in chosen.values()
        if pick.record.yanked and not pick.installed
    )
    return Resolution(plugins, _install_order(edges), warnings)


def _install_order(edges: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Dependencies before dependents; among plugins free to go, by id (Kahn's algorithm)."""
    waiting = {p: len(deps) for p, deps in edges.items()}
    dependents: dict[str, list[str]] = {p: [] for p in edges}
    for p, deps in edges.items():
        for d in deps:
            dependents[d].append(p)
    ready = [p for p, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        p = heapq.heappop(ready)
        order.append(p)
        for q in dependents[p]:
            waiting[q] -= 1
            if waiting[q] == 0:
                heapq.heappush(ready, q)
    return tuple(order)


def _cycles(edges: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """The cycles a depth-first walk (ids in order) meets, each as a path that ends where it
    starts, rotated to begin at its smallest id."""
    found: dict[tuple[str, ...], list[str]] = {}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if start in state:
            continue
        path = [start]
        state[start] = 1
        stack: list[Iterator[str]] = [iter(edges[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(nxt) == 1:
                loop = path[path.index(nxt) :]
                i = loop.index(min(loop))
                loop = loop[i:] + loop[:i]
                found.setdefault(tuple(loop), [*loop, loop[0]])
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(edges[nxt]))
    return [found[k] for k in sorted(found)]


def _cycle_error(cycles: list[list[str]], chosen: Mapping[str, _Candidate]) -> ResolutionError:
    paths = [" -> ".join(cycle) for cycle in cycles]
    details = [
        {
            "message": f"{path} ({', '.join(f'{p} {chosen[p].version}' for p in cycle[:-1])})",
            "problem": "cycle",
            "cycle": cycle,
            "versions": {p: str(chosen[p].version) for p in cycle[:-1]},
        }
        for path, cycle in zip(paths, cycles, strict=True)
    ]
    return ResolutionError(
        "the dependencies form a cycle: " + "; ".join(paths),
        code="dependency_cycle",
        details=details,
    )


# -- explanations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Want:
    """One reason a plugin's version is constrained: ``req``, wanted by ``who`` of ``by``."""

    req: _Requirement
    by: str  # a plugin id, or _ROOT
    who: int  # the versions of ``by`` that want it

    def clause(self, solver: _Solver) -> str:
        target, req = self.req.plugin_id, self.req
        if req.kind == "keep":
            return f"{target} stays at its installed {req.version} (upgrades are not allowed)"
        if req.kind == "installed":
            return f"{target} may not go below its installed {req.version}"
        who = "the request" if self.by == _ROOT else solver.packages[self.by].describe(self.who)
        several = self.by != _ROOT and self.who.bit_count() > 1
        verb = "want" if several and not who.startswith("every version") else "wants"
        optional = " (optional)" if req.optional else ""
        return f"{who} {verb} {target} {req.text}{optional}"

    def as_data(self, solver: _Solver) -> dict[str, Any]:
        versions = (
            []
            if self.by == _ROOT
            else [str(c.version) for c in solver.packages[self.by].listed(self.who)][::-1]
        )
        return {
            "plugin": None if self.by == _ROOT else self.by,
            "versions": versions,
            "kind": self.req.kind,
            "range": self.req.wanted,
            "optional": self.req.optional,
        }


def _usable(solver: _Solver, plugin_id: str) -> int:
    pkg = solver.packages[plugin_id]
    return pkg.versions & ~pkg.unusable


def _refused(solver: _Solver, plugin_id: str, mask: int) -> list[dict[str, str]]:
    pkg = solver.packages[plugin_id]
    return [
        {"version": str(c.version), "reason": c.unusable}
        for c in pkg.listed(mask & pkg.unusable)
        if c.unusable
    ]


def _why_not(refused: list[dict[str, str]]) -> str:
    return "; ".join(f"{r['version']} is {r['reason']}" for r in refused)


def _explain_plugin(solver: _Solver, plugin_id: str, wants: list[_Want]) -> dict[str, Any] | None:
    """What is wrong with ``plugin_id``: nothing matches one want, or two wants exclude each
    other; None when neither (the conflict is elsewhere)."""
    pkg = solver.packages[plugin_id]
    # The request first, then dependents by id, then what installed plugins hold.
    wants = sorted(wants, key=lambda w: (w.req.kind in ("keep", "installed"), w.by != _ROOT, w.by))
    usable = _usable(solver, plugin_id)
    installed = next((c.version for c in pkg.candidates if c.installed), None)
    item: dict[str, Any] = {
        "plugin": plugin_id,
        "installed": str(installed) if installed else None,
        "wanted_by": [w.as_data(solver) for w in wants],
        "available": [str(c.version) for c in pkg.listed(usable)][:10],
    }
    if not pkg.candidates:
        clauses = "; ".join(w.clause(solver) for w in wants)
        return item | {
            "problem": "unknown",
            "message": f"{plugin_id} is not in the catalog ({clauses})",
        }
    for w in wants:
        mask = pkg.mask(w.req)
        if not w.req.optional and not mask & usable:
            refused = _refused(solver, plugin_id, mask)
            listed = ", ".join(item["available"]) or "none"
            why = f"{_why_not(refused)}; " if refused else ""
            return item | {
                "problem": "missing",
                "refused": refused,
                "message": f"no version of {plugin_id} matches {w.req.wanted}: "
                f"{w.clause(solver)} ({why}usable versions: {listed})",
            }
    for i, a in enumerate(wants):
        for b in wants[i + 1 :]:
            both = pkg.mask(a.req) & pkg.mask(b.req)
            if (a.req.optional and b.req.optional) or both & usable:
                continue
            if a.by == b.by != _ROOT:
                continue  # two versions of one plugin: alternatives, not constraints together
            refused = _refused(solver, plugin_id, both)
            why = f"; {_why_not(refused)}" if refused else ""
            # A clause about the installed version names it already.
            held = {a.req.kind, b.req.kind} & {"keep", "installed"}
            suffix = f" (installed: {installed})" if installed and not held else ""
            return item | {
                "problem": "conflict",
                "refused": refused,
                "message": f"{a.clause(solver)} but {b.clause(solver)}{suffix}{why}",
            }
    return None


def _breaking_dependents(
    solver: _Solver,
    requests: Sequence[tuple[str, str]],
    installed: Mapping[str, PluginVersion],
    allow_upgrade: bool,
) -> list[dict[str, Any]]:
    """For each requested plugin: the installed plugins that stay and whose range for it no
    usable version of the request satisfies. Every one is named, not only the first the
    search met."""
    if allow_upgrade:
        return []
    requested = {p for p, _ in requests}
    items = []
    for plugin_id, text in requests:
        if plugin_id not in solver.packages:
            continue
        pkg = solver.packages[plugin_id]
        wanted = pkg.mask(_Requirement(plugin_id, "request", text.strip())) & _usable(
            solver, plugin_id
        )
        if not wanted:
            continue
        breaking: list[_Want] = []
        for dependent in sorted(installed.keys() - requested):
            record = installed[dependent]
            dep_text = record.dependencies.get(plugin_id)
            if dep_text is None:
                continue
            optional = plugin_id in record.optional
            req = _Requirement(plugin_id, "dependency", dep_text, optional=optional)
            try:
                if pkg.mask(req) & wanted:
                    continue
            except VersionError:
                continue
            holder = solver.package(dependent)
            bit = next(i for i, c in enumerate(holder.candidates) if c.installed)
            breaking.append(_Want(req, dependent, 1 << bit))
        if breaking:
            names = "; ".join(w.clause(solver) for w in breaking)
            items.append(
                {
                    "plugin": plugin_id,
                    "problem": "breaks_dependents",
                    "installed": str(installed[plugin_id].version)
                    if plugin_id in installed
                    else None,
                    "range": text,
                    "dependents": [w.as_data(solver) for w in breaking],
                    "message": f"{plugin_id} {text} would break installed plugins that stay: "
                    f"{names}",
                }
            )
    return items


def _explain(
    solver: _Solver,
    failure: _Incompatibility | None,
    requests: Sequence[tuple[str, str]],
    installed: Mapping[str, PluginVersion],
    allow_upgrade: bool,
    *,
    gave_up: int | None = None,
) -> ResolutionError:
    # The facts the failure was derived from, grouped by the plugin they constrain.
    wants: dict[str, list[_Want]] = {}
    for fact in sorted(failure.facts(), key=_fact_order) if failure else ():
        if fact.req is not None:
            wants.setdefault(fact.req.plugin_id, []).append(
                _Want(fact.req, fact.plugin_id, fact.who)
            )
    details = _breaking_dependents(solver, requests, installed, allow_upgrade)
    named = {d["plugin"] for d in details}
    for plugin_id in sorted(wants.keys() - named):
        item = _explain_plugin(solver, plugin_id, wants[plugin_id])
        if item is not None:
            details.append(item)
    if not details:
        # No single plugin shows the conflict by itself: list what the search combined.
        for plugin_id in sorted(wants):
            for w in wants[plugin_id]:
                details.append(
                    {
                        "plugin": plugin_id,
                        "problem": "requirement",
                        "message": w.clause(solver),
                        "wanted_by": [w.as_data(solver)],
                    }
                )
    if gave_up is not None:
        details.append(
            {
                "problem": "gave_up",
                "steps": gave_up,
                "message": f"the search stopped after {gave_up} steps without finding a set",
            }
        )
    code = (
        "dependency_missing"
        if details and all(d["problem"] in ("missing", "unknown") for d in details)
        else "dependency_conflict"
    )
    asked = ", ".join(f"{p} {r}" for p, r in requests) or "the installed set"
    summary = "; ".join(d["message"] for d in details[:3])
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return ResolutionError(f"cannot resolve {asked}: {summary}{more}", code=code, details=details)


def _fact_order(fact: _Fact) -> tuple[str, str, int]:
    return (fact.req.plugin_id if fact.req else fact.plugin_id, fact.plugin_id, fact.who)
