"""The catalog's dependency solver: the versions it picks, the order it installs them in, and
how it explains a set that cannot be had."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

import pytest

from orchestrator.catalog.solver import (
    PluginVersion,
    Resolution,
    ResolutionError,
    Source,
    resolve,
)
from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.domain.manifest import parse_manifest
from orchestrator.domain.versions import Version, VersionRange
from tests.fixtures.manifests import minimal_manifest

V = PluginVersion.of
A, B, C, D, E, F = (f"com.example.{n}" for n in "abcdef")


def catalog(versions: Mapping[str, Sequence[PluginVersion]]) -> Source:
    return lambda plugin_id: list(versions.get(plugin_id, []))


def chosen(res: Resolution) -> dict[str, str]:
    return {p: str(r.version) for p, r in res.plugins.items()}


def messages(exc: ResolutionError) -> list[str]:
    return [d["message"] for d in exc.details]


# -- picking versions ------------------------------------------------------------------------


def test_the_newest_compatible_version_in_range_is_chosen() -> None:
    src = catalog(
        {
            A: [V("1.0.0"), V("1.4.0"), V("1.2.0"), V("2.0.0"), V("1.5.0", compatible=False)],
        }
    )
    assert chosen(resolve([(A, "^1.2")], source=src)) == {A: "1.4.0"}
    assert chosen(resolve([(A, "*")], source=src)) == {A: "2.0.0"}


def test_dependencies_are_resolved_transitively() -> None:
    src = catalog(
        {
            A: [V("1.0.0", {B: "^1"}), V("1.1.0", {B: "^2"})],
            B: [V("1.9.0", {C: "~1.0"}), V("2.0.0", {C: ">=1.1 <2"}), V("2.1.0", {C: "1.x"})],
            C: [V("1.0.5"), V("1.1.0"), V("1.3.0"), V("2.0.0")],
        }
    )
    res = resolve([(A, "^1")], source=src)
    assert chosen(res) == {A: "1.1.0", B: "2.1.0", C: "1.3.0"}
    assert [p.action for p in res.changes] == ["install"] * 3
    assert res.plugins[A].requested and not res.plugins[C].requested
    assert res.plugins[A].dependencies == (B,)


def test_prereleases_are_not_picked_by_a_plain_range() -> None:
    src = catalog({A: [V("1.0.0"), V("1.1.0-beta.1")]})
    assert chosen(resolve([(A, "^1")], source=src)) == {A: "1.0.0"}
    assert chosen(resolve([(A, "1.1.0-beta.1")], source=src)) == {A: "1.1.0-beta.1"}


def test_an_older_version_is_chosen_when_the_newest_cannot_fit() -> None:
    src = catalog(
        {
            A: [V("1.0.0", {B: "^1"}), V("1.1.0", {B: "^2"})],
            B: [V("1.0.0"), V("2.0.0")],
            C: [V("1.0.0", {B: "^1"})],
        }
    )
    assert chosen(resolve([(A, "*"), (C, "*")], source=src)) == {A: "1.0.0", B: "1.0.0", C: "1.0.0"}


def test_install_order_puts_dependencies_first() -> None:
    src = catalog(
        {
            A: [V("1.0.0", {C: "*", B: "*"})],
            B: [V("1.0.0", {D: "*"})],
            C: [V("1.0.0", {B: "*"})],
            D: [V("1.0.0")],
        }
    )
    res = resolve([(A, "*")], source=src)
    assert res.order == (D, B, C, A)
    assert [p.plugin_id for p in res.changes] == [D, B, C, A]


def test_same_input_same_answer_whatever_order_the_catalog_lists() -> None:
    versions = {
        A: [V("1.0.0", {B: "^1", C: "^1"}), V("1.1.0", {B: "^1", C: "^1"})],
        B: [V("1.0.0", {D: "^1"}), V("1.2.0", {D: "^1"})],
        C: [V("1.0.0", {D: "^1"})],
        D: [V("1.0.0"), V("1.1.0")],
    }
    first = resolve([(A, "*")], source=catalog(versions))
    for seed in range(5):
        shuffled = {k: random.Random(seed).sample(v, len(v)) for k, v in versions.items()}
        again = resolve([(A, "*")], source=catalog(shuffled))
        assert again == first


# -- what is installed ------------------------------------------------------------------------


def test_an_installed_dependency_that_satisfies_is_kept() -> None:
    src = catalog(
        {A: [V("1.0.0", {B: "^1"})], B: [V("1.0.0"), V("1.5.0")]},
    )
    installed = {B: V("1.0.0")}
    res = resolve([(A, "^1")], source=src, installed=installed)
    assert chosen(res) == {A: "1.0.0", B: "1.0.0"}
    assert res.plugins[B].action == "keep"
    assert [p.plugin_id for p in res.changes] == [A]
    # Allowing upgrades moves nothing that does not need to move.
    res = resolve([(A, "^1")], source=src, installed=installed, allow_upgrade=True)
    assert res.plugins[B].action == "keep"


def test_an_installed_dependency_out_of_range_is_a_conflict_unless_upgrades_are_allowed() -> None:
    src = catalog(
        {
            A: [V("1.0.0", {B: "^2"}), V("1.1.0", {B: "^2"})],
            B: [V("1.3.2"), V("2.0.0"), V("2.1.0")],
        }
    )
    installed = {B: V("1.3.2")}
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "^1")], source=src, installed=installed)
    assert caught.value.code == "dependency_conflict"
    assert caught.value.status_code == 409
    [item] = caught.value.details
    assert item["message"] == (
        "every version of com.example.a wants com.example.b ^2 but com.example.b stays at its "
        "installed 1.3.2 (upgrades are not allowed)"
    )
    assert item["plugin"] == B and item["installed"] == "1.3.2"

    res = resolve([(A, "^1")], source=src, installed=installed, allow_upgrade=True)
    assert chosen(res) == {A: "1.1.0", B: "2.1.0"}
    assert res.plugins[B].action == "upgrade"
    assert [p.plugin_id for p in res.changes] == [B, A]


def test_upgrades_never_go_below_the_installed_version() -> None:
    src = catalog({A: [V("1.0.0", {B: "<1.5"})], B: [V("1.0.0"), V("1.5.0"), V("2.0.0")]})
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "*")], source=src, installed={B: V("1.5.0")}, allow_upgrade=True)
    assert "com.example.b may not go below its installed 1.5.0" in caught.value.message


def test_a_requested_installed_plugin_goes_to_the_newest_in_its_range() -> None:
    src = catalog({A: [V("1.0.0"), V("1.5.0"), V("2.0.0")]})
    res = resolve([(A, "^1")], source=src, installed={A: V("1.0.0")})
    assert res.plugins[A].action == "upgrade" and str(res.plugins[A].version) == "1.5.0"
    res = resolve([(A, "=1.0.0")], source=src, installed={A: V("1.5.0")})
    assert res.plugins[A].action == "downgrade"


def test_the_installed_record_is_used_for_the_installed_version() -> None:
    # Installed from a bundle the catalog does not know, or with other dependencies.
    src = catalog({A: [V("1.0.0", {B: "^1"})], B: [V("1.0.0"), V("2.0.0")]})
    installed = {A: V("1.0.0", {B: "^2"}), B: V("2.0.0")}
    res = resolve([], source=src, installed=installed)
    assert chosen(res) == {A: "1.0.0", B: "2.0.0"}
    assert res.changes == ()


def test_an_upgrade_that_breaks_installed_dependents_is_refused_naming_each() -> None:
    src = catalog(
        {
            A: [V("1.3.2"), V("2.0.0")],
            D: [V("1.0.0", {A: "^1"})],
            E: [V("2.0.0", {A: "~1.3"})],
            F: [V("1.0.0", {A: "*"})],
        }
    )
    installed = {A: V("1.3.2"), D: V("1.0.0", {A: "^1"}), E: V("2.0.0", {A: "~1.3"})}
    installed[F] = V("1.0.0", {A: "*"})
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "^2")], source=src, installed=installed)
    assert caught.value.code == "dependency_conflict"
    [item] = [d for d in caught.value.details if d["problem"] == "breaks_dependents"]
    assert [(d["plugin"], d["versions"], d["range"]) for d in item["dependents"]] == [
        (D, ["1.0.0"], "^1"),
        (E, ["2.0.0"], "~1.3"),
    ]
    assert item["message"] == (
        "com.example.a ^2 would break installed plugins that stay: com.example.d 1.0.0 "
        "(installed) wants com.example.a ^1; com.example.e 2.0.0 (installed) wants "
        "com.example.a ~1.3"
    )
    # Within the dependents' ranges the upgrade goes through.
    assert chosen(resolve([(A, "^1")], source=src, installed=installed))[A] == "1.3.2"


def test_a_dependent_that_may_move_is_upgraded_along() -> None:
    src = catalog(
        {
            A: [V("1.0.0"), V("2.0.0")],
            D: [V("1.0.0", {A: "^1"}), V("1.1.0", {A: ">=1 <3"})],
        }
    )
    installed = {A: V("1.0.0"), D: V("1.0.0", {A: "^1"})}
    res = resolve([(A, "^2")], source=src, installed=installed, allow_upgrade=True)
    assert chosen(res) == {A: "2.0.0", D: "1.1.0"}
    assert [p.plugin_id for p in res.changes] == [A, D]


# -- conflicts, cycles, missing plugins -------------------------------------------------------


def test_a_conflict_names_who_wants_which_range() -> None:
    src = catalog(
        {
            A: [V("1.4.0", {B: "^2"})],
            C: [V("1.0.0", {B: "~1.3"})],
            B: [V("1.3.2"), V("1.3.5"), V("2.0.0")],
        }
    )
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "^1"), (C, "^1")], source=src)
    exc = caught.value
    assert isinstance(exc, SummitError) and exc.code == "dependency_conflict"
    [item] = exc.details
    assert item["message"] == (
        "com.example.a 1.4.0 wants com.example.b ^2 but com.example.c 1.0.0 wants "
        "com.example.b ~1.3"
    )
    assert item["problem"] == "conflict"
    assert [(w["plugin"], w["versions"], w["range"]) for w in item["wanted_by"]] == [
        (A, ["1.4.0"], "^2"),
        (C, ["1.0.0"], "~1.3"),
    ]
    assert item["message"] in exc.message

    # With B installed (and free to move up), the installed version is named too.
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "^1"), (C, "^1")], source=src, installed={B: V("1.3.2")}, allow_upgrade=True)
    assert (
        "com.example.a 1.4.0 wants com.example.b ^2 but com.example.c 1.0.0 wants "
        "com.example.b ~1.3 (installed: 1.3.2)"
    ) in messages(caught.value)


def test_a_conflict_deep_down_is_traced_to_the_plugins_involved() -> None:
    src = catalog(
        {
            A: [V("1.0.0", {B: "^1", C: "^1"})],
            B: [V("1.0.0", {D: "^1"}), V("1.1.0", {D: "^1"})],
            C: [V("1.0.0", {D: "^2"}), V("1.2.0", {D: "^2"})],
            D: [V("1.0.0"), V("2.0.0")],
        }
    )
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "*")], source=src)
    assert messages(caught.value) == [
        "every version of com.example.b wants com.example.d ^1 but every version of "
        "com.example.c wants com.example.d ^2"
    ]


def test_a_cycle_is_refused_with_its_path() -> None:
    src = catalog(
        {
            A: [V("1.0.0", {B: "^1"})],
            B: [V("1.0.0", {C: "^1"})],
            C: [V("1.0.0", {A: "^1"})],
        }
    )
    with pytest.raises(ResolutionError) as caught:
        resolve([(B, "*")], source=src)
    exc = caught.value
    assert exc.code == "dependency_cycle"
    assert "com.example.a -> com.example.b -> com.example.c -> com.example.a" in exc.message
    [item] = exc.details
    assert item["cycle"] == [A, B, C, A]
    assert item["versions"] == {A: "1.0.0", B: "1.0.0", C: "1.0.0"}


def test_a_plugin_depending_on_itself_is_a_cycle() -> None:
    src = catalog({A: [V("1.0.0", {A: "^1"})]})
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "*")], source=src)
    assert caught.value.code == "dependency_cycle"
    assert caught.value.details[0]["cycle"] == [A, A]


def test_an_unknown_plugin_is_missing() -> None:
    src = catalog({A: [V("1.0.0", {"com.example.ghost": "^1"})]})
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "*")], source=src)
    assert caught.value.code == "dependency_missing"
    assert messages(caught.value) == [
        "com.example.ghost is not in the catalog (com.example.a 1.0.0 wants com.example.ghost ^1)"
    ]
    with pytest.raises(ResolutionError) as caught:
        resolve([("com.example.ghost", "*")], source=src)
    assert caught.value.code == "dependency_missing"
    assert caught.value.details[0]["problem"] == "unknown"


def test_a_range_no_version_matches_is_missing_and_lists_what_there_is() -> None:
    src = catalog({A: [V("1.0.0", {B: "^3"})], B: [V("1.0.0"), V("2.1.0")]})
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "*")], source=src)
    assert caught.value.code == "dependency_missing"
    [item] = caught.value.details
    assert item["message"] == (
        "no version of com.example.b matches ^3: com.example.a 1.0.0 wants com.example.b ^3 "
        "(usable versions: 2.1.0, 1.0.0)"
    )
    assert item["available"] == ["2.1.0", "1.0.0"]


def test_an_optional_dependency_only_binds_a_plugin_that_is_there() -> None:
    src = catalog(
        {
            A: [V("1.0.0", {B: "^2"}, optional=[B])],
            B: [V("1.0.0"), V("2.0.0")],
            C: [V("1.0.0", {B: "*"})],
        }
    )
    assert chosen(resolve([(A, "*")], source=src)) == {A: "1.0.0"}
    assert chosen(resolve([(A, "*"), (C, "*")], source=src))[B] == "2.0.0"
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "*")], source=src, installed={B: V("1.0.0")})
    assert "com.example.a 1.0.0 wants com.example.b ^2 (optional)" in caught.value.message


# -- yanked and incompatible versions ---------------------------------------------------------


def test_a_yanked_version_is_skipped_for_a_range() -> None:
    src = catalog({A: [V("1.0.0"), V("1.1.0", yanked=True)]})
    res = resolve([(A, "^1")], source=src)
    assert chosen(res) == {A: "1.0.0"} and res.warnings == ()


def test_a_yanked_version_named_exactly_is_chosen_with_a_warning() -> None:
    src = catalog({A: [V("1.0.0"), V("1.1.0", yanked=True)]})
    for pin in ("1.1.0", "=1.1.0", " = 1.1.0 "):
        res = resolve([(A, pin)], source=src)
        assert chosen(res) == {A: "1.1.0"}
        assert res.warnings == (
            "com.example.a 1.1.0 is yanked; it is chosen because the request names that "
            "version exactly",
        )
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "1.1.0")], source=src, allow_yanked=False)
    assert caught.value.code == "dependency_missing"
    assert "1.1.0 is yanked" in caught.value.message


def test_a_dependency_pinned_to_a_yanked_version_is_not_satisfied() -> None:
    src = catalog({A: [V("1.0.0", {B: "1.1.0"})], B: [V("1.0.0"), V("1.1.0", yanked=True)]})
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "*")], source=src)
    [item] = caught.value.details
    assert item["refused"] == [{"version": "1.1.0", "reason": "yanked"}]
    assert "1.1.0 is yanked" in item["message"]


def test_incompatible_versions_are_skipped_and_named_when_nothing_else_matches() -> None:
    src = catalog(
        {
            A: [V("1.0.0"), V("2.0.0", compatible=False), V("2.1.0", compatible=False)],
        }
    )
    assert chosen(resolve([(A, "*")], source=src)) == {A: "1.0.0"}
    with pytest.raises(ResolutionError) as caught:
        resolve([(A, "^2")], source=src)
    assert caught.value.code == "dependency_missing"
    [item] = caught.value.details
    assert item["message"] == (
        "no version of com.example.a matches ^2: the request wants com.example.a ^2 "
        "(2.1.0 is not compatible with this orchestrator; 2.0.0 is not compatible with this "
        "orchestrator; usable versions: 1.0.0)"
    )


def test_an_installed_version_stays_usable_though_yanked_in_the_catalog() -> None:
    src = catalog({A: [V("1.0.0", yanked=True), V("1.1.0", compatible=False)]})
    res = resolve([], source=src, installed={A: V("1.0.0")})
    assert chosen(res) == {A: "1.0.0"} and res.warnings == ()


def test_a_manifest_gives_the_solver_its_dependencies() -> None:
    manifest = parse_manifest(
        minimal_manifest(
            id=A,
            version="1.2.0",
            dependencies=[{"id": B, "version": "^1.0"}, {"id": C, "optional": True}],
        )
    )
    record = PluginVersion.from_manifest(manifest, yanked=True)
    assert record == PluginVersion(Version(1, 2, 0), {B: "^1.0", C: "*"}, frozenset({C}), True)


def test_an_unreadable_request_range_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve([(A, "^^1")], source=catalog({}))
    assert caught.value.code == "invalid_version_range"


# -- the search itself ------------------------------------------------------------------------


def valid(
    picks: Mapping[str, Version],
    versions: Mapping[str, Sequence[PluginVersion]],
    requests: Sequence[tuple[str, str]],
    installed: Mapping[str, PluginVersion] | None = None,
    allow_upgrade: bool = False,
) -> bool:
    """Whether ``picks`` is a set the rules allow (the checker the solver is held to)."""
    installed = installed or {}
    records = {p: next(r for r in versions[p] if r.version == v) for p, v in picks.items()}
    for p, r in records.items():
        if (not r.compatible or r.yanked) and (p not in installed or installed[p] != r):
            return False
    for plugin_id, text in requests:
        if plugin_id not in picks or not VersionRange.parse(text).admits(picks[plugin_id]):
            return False
    for plugin_id, record in installed.items():
        if plugin_id in dict(requests) or plugin_id not in picks:
            continue
        if picks[plugin_id] < record.version:
            return False
        if not allow_upgrade and picks[plugin_id] != record.version:
            return False
    if any(p not in picks for p in installed):
        return False
    for record in records.values():
        for dep, text in record.dependencies.items():
            if dep not in picks:
                if dep not in record.optional:
                    return False
            elif not VersionRange.parse(text).admits(picks[dep]):
                return False
    return True


def small_catalog(rng: random.Random) -> dict[str, list[PluginVersion]]:
    ids = [A, B, C, D]
    out: dict[str, list[PluginVersion]] = {}
    for i, plugin_id in enumerate(ids):
        records: list[PluginVersion] = []
        for _ in range(rng.randint(1, 3)):
            deps = {}
            for other in rng.sample(ids[i + 1 :], min(len(ids) - i - 1, rng.randint(0, 2))):
                deps[other] = rng.choice(["^1", "^2", "*", ">=1.1", "~1.0", "<2"])
            optional = [d for d in deps if rng.random() < 0.2]
            version = rng.choice(["1.0.0", "1.1.0", "2.0.0", "2.1.0"])
            if all(str(r.version) != version for r in records):
                yanked, compatible = rng.random() < 0.1, rng.random() > 0.1
                records.append(
                    V(version, deps, optional=optional, yanked=yanked, compatible=compatible)
                )
        out[plugin_id] = records
    return out


@pytest.mark.parametrize("seed", range(400))
def test_the_solver_agrees_with_trying_every_set(seed: int) -> None:
    rng = random.Random(seed)
    versions = small_catalog(rng)
    requests = [(A, rng.choice(["*", "^1", "^2"]))]
    if rng.random() < 0.5:
        requests.append((B, rng.choice(["*", "^1", "^2", "~1.1"])))
    installed = {}
    for plugin_id in (C, D):
        if versions[plugin_id] and rng.random() < 0.4:
            installed[plugin_id] = rng.choice(versions[plugin_id])
    allow_upgrade = rng.random() < 0.5
    choices = [[None, *(r.version for r in versions[p])] for p in versions]
    exists = any(
        valid(
            {p: v for p, v in zip(versions, combo, strict=True) if v},
            versions,
            requests,
            installed,
            allow_upgrade,
        )
        for combo in itertools.product(*choices)
    )
    try:
        res = resolve(
            requests, source=catalog(versions), installed=installed, allow_upgrade=allow_upgrade
        )
    except ResolutionError as exc:
        assert exc.code in ("dependency_conflict", "dependency_missing")
        assert not exists, exc.message
        assert exc.details and all(d["message"] for d in exc.details)
    else:
        assert exists
        picks = {p: r.version for p, r in res.plugins.items()}
        assert valid(picks, versions, requests, installed, allow_upgrade)


def generated(plugins: int, seed: int) -> dict[str, list[PluginVersion]]:
    """A catalog where plugin i depends on plugins a little after it (chains run deep), with
    5-20 versions each and 2-5 caret dependencies per version; a seeded "witness" version of
    each plugin fits the others' witnesses, so at least one set exists."""
    rng = random.Random(seed)
    names = [f"com.gen.p{i:03d}" for i in range(plugins)]
    lineups: list[list[Version]] = []
    for _ in range(plugins):
        major, minor, out = 1, 0, []
        for _ in range(rng.randint(5, 20)):
            out.append(Version(major, minor, 0))
            if rng.random() < 0.2:
                major, minor = major + 1, 0
            else:
                minor += 1
        lineups.append(out)
    witness = [rng.choice(lineup) for lineup in lineups]
    versions: dict[str, list[PluginVersion]] = {}
    for i, name in enumerate(names):
        window = list(range(i + 1, min(plugins, i + 12)))
        records: list[PluginVersion] = []
        for v in lineups[i]:
            deps = {}
            for j in rng.sample(window, min(len(window), rng.randint(2, 5))):
                target = witness[j] if v == witness[i] else rng.choice(lineups[j])
                deps[names[j]] = f"^{target.major}.{target.minor}"
            records.append(PluginVersion(v, deps))
        versions[name] = records
    return versions


def test_a_generated_catalog_of_200_plugins_solves() -> None:
    versions = generated(200, seed=3)
    requests = [(p, "*") for p in list(versions)[:10]]
    res = resolve(requests, source=catalog(versions))
    picks = {p: r.version for p, r in res.plugins.items()}
    assert valid(picks, versions, requests)
    assert len(picks) > 100
    # Every plugin comes after the plugins it depends on.
    position = {p: i for i, p in enumerate(res.order)}
    assert sorted(position) == sorted(picks)
    for p, r in res.plugins.items():
        assert all(position[d] < position[p] for d in r.dependencies)


def test_the_search_is_bounded_and_says_so() -> None:
    versions = generated(200, seed=3)
    requests = [(p, "*") for p in list(versions)[:10]]
    with pytest.raises(ResolutionError) as caught:
        resolve(requests, source=catalog(versions), max_steps=20)
    assert caught.value.code == "dependency_conflict"
    assert caught.value.details[-1] == {
        "problem": "gave_up",
        "steps": 20,
        "message": "the search stopped after 20 steps without finding a set",
    }
