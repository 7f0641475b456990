"""Semantic versions and the npm-style ranges plugin manifests use."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.domain.versions import Version, VersionError, VersionRange


@pytest.mark.parametrize(
    "text",
    ["0.0.0", "1.2.3", "10.20.30", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-0.3.7", "1.0.0+build.1"],
)
def test_valid_semver_parses(text: str) -> None:
    v = Version.parse(text)
    assert str(v) == text.split("+")[0]


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "v1.2.3",
        "1.2.3-",
        "1.2.3-01",
        "1.2.3-alpha..1",
        "1.2.3+",
        "-1.2.3",
        "a.b.c",
        "",
    ],
)
def test_invalid_semver_is_refused(text: str) -> None:
    with pytest.raises(VersionError):
        Version.parse(text)


def test_fields_are_integers() -> None:
    v = Version.parse("1.10.2-rc.1")
    assert (v.major, v.minor, v.patch, v.prerelease) == (1, 10, 2, ("rc", "1"))


def test_precedence_follows_semver_spec() -> None:
    # The exact example chain of semver 2.0.0, item 11.
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
        "10.0.0",
    ]
    versions = [Version.parse(t) for t in chain]
    shuffled = list(reversed(versions[::2])) + versions[1::2]
    assert [str(v) for v in sorted(shuffled)] == chain
    for lower, higher in itertools.pairwise(versions):
        assert lower < higher
        assert higher > lower


def test_numbers_compare_numerically_not_as_text() -> None:
    assert Version.parse("1.9.0") < Version.parse("1.10.0")
    assert Version.parse("1.0.0-rc.9") < Version.parse("1.0.0-rc.10")


def test_build_metadata_does_not_affect_precedence() -> None:
    assert Version.parse("1.0.0+a") == Version.parse("1.0.0+b") == Version.parse("1.0.0")


@pytest.mark.parametrize(
    ("rng", "admitted", "refused"),
    [
        ("^1.2.3", ["1.2.3", "1.9.9"], ["1.2.2", "2.0.0", "2.0.0-alpha"]),
        ("^1.2", ["1.2.0", "1.99.0"], ["1.1.9", "2.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4", "0.0.2"]),
        ("^0", ["0.0.0", "0.9.9"], ["1.0.0"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
        ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0"]),
        ("~1", ["1.0.0", "1.9.0"], ["2.0.0"]),
        (">=0.1,<1", ["0.1.0", "0.9.9"], ["0.0.9", "1.0.0", "1.0.0-rc.1"]),
        (">=0.1 <1", ["0.1.0", "0.9.9"], ["0.0.9", "1.0.0"]),
        (">= 1.0, < 2", ["1.0.0", "1.5.0"], ["0.9.0", "2.0.0"]),
        (">1.2.3", ["1.2.4"], ["1.2.3"]),
        (">1", ["2.0.0"], ["1.9.9"]),
        ("<=1.2", ["1.2.9"], ["1.3.0"]),
        ("<=1.2.3", ["1.2.3"], ["1.2.4"]),
        ("<1.2", ["1.1.9"], ["1.2.0"]),
        ("1.x", ["1.0.0", "1.9.9"], ["0.9.9", "2.0.0"]),
        ("1.2.x", ["1.2.0", "1.2.7"], ["1.3.0", "1.1.0"]),
        ("1", ["1.4.0"], ["2.0.0"]),
        ("1.2.3", ["1.2.3"], ["1.2.4", "1.2.2"]),
        ("=1.2.3", ["1.2.3"], ["1.2.4"]),
        ("*", ["0.0.0", "99.1.0"], ["1.0.0-beta"]),
        ("^1.0 || ^3.0", ["1.5.0", "3.1.0"], ["2.0.0", "4.0.0"]),
        (
            ">=1.0.0-beta",
            ["1.0.0-beta", "1.0.0-rc.1", "1.0.0", "1.1.0"],
            ["1.0.0-alpha", "1.1.0-rc"],
        ),
        ("^1.2.3-beta.2", ["1.2.3-beta.2", "1.2.3-beta.11", "1.2.4"], ["1.2.3-beta.1", "1.2.4-rc"]),
    ],
)
def test_range_admits(rng: str, admitted: list[str], refused: list[str]) -> None:
    r = VersionRange.parse(rng)
    assert [v for v in admitted if not r.admits(v)] == []
    assert [v for v in refused if r.admits(v)] == []


def test_admits_takes_a_version_object_too() -> None:
    assert VersionRange.parse("^1.0").admits(Version.parse("1.4.0"))


def test_orchestrator_version_is_admitted_by_the_example_range() -> None:
    from orchestrator import __version__

    assert VersionRange.parse(">=0.1,<1").admits(__version__)


@pytest.mark.parametrize(
    "rng", ["", "   ", "abc", ">=", "1.2.3.4", "^^1", ">=1.0 ||", "~>1.0", "1.2.3+build"]
)
def test_malformed_range_is_refused(rng: str) -> None:
    with pytest.raises(VersionError):
        VersionRange.parse(rng)


def test_admits_refuses_a_malformed_version() -> None:
    with pytest.raises(VersionError):
        VersionRange.parse("*").admits("1.0")
