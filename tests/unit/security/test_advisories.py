"""Dependency advisories against the invented OSV records in tests/fixtures/osv."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from orchestrator.security import (
    AdvisoryDatabase,
    AdvisoryDatabaseError,
    DependencyReport,
    check,
    read_requirements,
)

OSV = Path(__file__).resolve().parents[2] / "fixtures" / "osv"


@pytest.fixture(scope="module")
def db() -> AdvisoryDatabase:
    return AdvisoryDatabase.load(OSV)


def one(requirement: str, db: AdvisoryDatabase) -> DependencyReport:
    [report] = check([requirement], db)
    return report


def test_a_pinned_vulnerable_version(db: AdvisoryDatabase) -> None:
    report = one("PyYAML==5.3", db)
    assert (report.status, report.name, report.version, report.reason) == (
        "vulnerable",
        "pyyaml",
        "5.3",
        None,
    )
    [advisory] = report.advisories
    assert advisory.id == "SUMMIT-TEST-2026-0001"
    assert advisory.summary.startswith("Test advisory: unsafe default loader")
    assert (advisory.severity, advisory.fixed) == ("HIGH", "5.4")


@pytest.mark.parametrize("requirement", ["PyYAML==5.4", "PyYAML==6.0.1", "PyYAML===5.4"])
def test_the_fixed_version_and_later_are_clean(db: AdvisoryDatabase, requirement: str) -> None:
    report = one(requirement, db)
    assert (report.status, report.advisories) == ("clean", ())


def test_arbitrary_equality_pins_are_checked(db: AdvisoryDatabase) -> None:
    assert one("PyYAML===5.3", db).status == "vulnerable"


@pytest.mark.parametrize(
    ("version", "status"),
    [("1.9.9", "clean"), ("2.0.0", "vulnerable"), ("2.19.1", "vulnerable"), ("2.19.2", "clean")],
)
def test_last_affected_is_inclusive(db: AdvisoryDatabase, version: str, status: str) -> None:
    report = one(f"requests=={version}", db)
    assert report.status == status
    if status == "vulnerable":
        # No fixed release is named; the CVSS 3.1 vector scores 6.1.
        assert [(a.fixed, a.severity) for a in report.advisories] == [(None, "MEDIUM")]


@pytest.mark.parametrize(
    ("version", "status"),
    [("2.10", "vulnerable"), ("2.10.0", "vulnerable"), ("2.10.1", "vulnerable"), ("2.11", "clean")],
)
def test_the_versions_list(db: AdvisoryDatabase, version: str, status: str) -> None:
    report = one(f"jinja2=={version}", db)
    assert report.status == status
    if status == "vulnerable":
        assert [(a.id, a.severity) for a in report.advisories] == [
            ("SUMMIT-TEST-2026-0003", "MEDIUM")
        ]


@pytest.mark.parametrize(
    ("version", "fixed"),
    [
        ("0.9", None),
        ("1.0", "1.26.5"),
        ("1.26.4", "1.26.5"),
        ("1.26.5", None),
        ("2.0.2", "2.0.3"),
        ("2.0.3", None),
        # Inside the range whose start is not a PEP 440 version: skipped, so not affected.
        ("2.5.0", None),
    ],
)
def test_several_ranges(db: AdvisoryDatabase, version: str, fixed: str | None) -> None:
    report = one(f"urllib3=={version}", db)
    assert report.status == ("vulnerable" if fixed else "clean")
    assert [a.fixed for a in report.advisories] == ([fixed] if fixed else [])


@pytest.mark.parametrize(
    "requirement",
    [
        "PyYAML",
        "PyYAML>=5.0",
        "PyYAML~=5.3",
        "PyYAML==5.*",
        "PyYAML!=5.4",
        "PyYAML>=5.0,<5.4",
        "not-in-the-database>=1.0",
    ],
)
def test_an_unpinned_requirement_is_unchecked(db: AdvisoryDatabase, requirement: str) -> None:
    report = one(requirement, db)
    assert report.status == "unchecked"
    assert report.version is None
    assert report.reason
    assert report.name is not None


@pytest.mark.parametrize(
    ("requirement", "name"),
    [
        ("PyYAML @ https://example.invalid/PyYAML-5.3.tar.gz", "pyyaml"),
        ("https://example.invalid/PyYAML-5.3.tar.gz", None),
        ("-e git+https://example.invalid/pyyaml.git#egg=PyYAML", None),
        ("./vendor/pyyaml", None),
        ("PyYAML==5.3==5.4", None),
        ("PyYAML==5.3,==5.4", "pyyaml"),
        ("PyYAML==5.3,>=5.4", "pyyaml"),
    ],
)
def test_urls_paths_and_nonsense_are_unchecked(
    db: AdvisoryDatabase, requirement: str, name: str | None
) -> None:
    report = one(requirement, db)
    assert (report.status, report.name, report.version) == ("unchecked", name, None)
    assert report.reason


def test_a_pinned_package_without_advisories_is_clean(db: AdvisoryDatabase) -> None:
    report = one("summit-nonexistent-package==1.0", db)
    assert (report.status, report.name, report.version) == (
        "clean",
        "summit-nonexistent-package",
        "1.0",
    )


def test_names_are_compared_after_pep_503_normalisation(db: AdvisoryDatabase) -> None:
    for spelling in ("PYYAML==5.3", "pyyaml==5.3", "PyYaml==5.3"):
        assert one(spelling, db).status == "vulnerable", spelling
    # The database spells it python_dateutil.
    for spelling in ("python-dateutil==2.8.0", "Python.Dateutil==2.8.0", "PYTHON_DATEUTIL==2.8.0"):
        assert one(spelling, db).status == "vulnerable", spelling
    # Py_YAML normalises to py-yaml: another project on PyPI, not PyYAML.
    assert one("Py_YAML==5.3", db).status == "clean"


def test_cvss_vector_gives_the_severity(db: AdvisoryDatabase) -> None:
    [advisory] = one("python-dateutil==2.8.0", db).advisories
    assert (advisory.severity, advisory.fixed) == ("CRITICAL", "2.8.1")


def test_other_ecosystems_and_withdrawn_records_are_ignored(db: AdvisoryDatabase) -> None:
    assert one("requests==2.31.0", db).status == "clean"  # the npm record covers every version
    assert one("flask==2.0.0", db).status == "clean"  # withdrawn
    assert db.advisories_for("flask") == []
    assert len(db) == 5


def test_an_invalid_json_file_is_named(tmp_path: Path) -> None:
    shutil.copytree(OSV, tmp_path / "osv")
    broken = tmp_path / "osv" / "SUMMIT-TEST-2026-9999.json"
    broken.write_text('{"id": "SUMMIT-TEST-2026-9999", "affected": [')
    with pytest.raises(AdvisoryDatabaseError, match=r"SUMMIT-TEST-2026-9999\.json") as info:
        AdvisoryDatabase.load(tmp_path / "osv")
    assert info.value.details == {"file": str(broken)}


@pytest.mark.parametrize(
    "record",
    [
        [],
        {"summary": "no id"},
        {"id": "SUMMIT-TEST-2026-9998", "affected": {"package": "PyYAML"}},
        {"id": "SUMMIT-TEST-2026-9998", "affected": [{"package": "PyYAML"}]},
    ],
)
def test_a_record_that_is_not_osv_is_named(tmp_path: Path, record: object) -> None:
    (tmp_path / "bad.json").write_text(json.dumps(record))
    with pytest.raises(AdvisoryDatabaseError, match=r"bad\.json"):
        AdvisoryDatabase.load(tmp_path)


def test_a_missing_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AdvisoryDatabaseError, match="absent"):
        AdvisoryDatabase.load(tmp_path / "absent")


def test_aliases_of_one_vulnerability_are_reported_once(tmp_path: Path) -> None:
    def record(osv_id: str, alias: str) -> str:
        return json.dumps(
            {
                "id": osv_id,
                "aliases": [alias],
                "summary": "Test advisory",
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "summit-demo"},
                        "versions": ["1.0"],
                    }
                ],
            }
        )

    (tmp_path / "a.json").write_text(record("SUMMIT-TEST-2026-0101", "SUMMIT-TEST-2026-0102"))
    (tmp_path / "b.json").write_text(record("SUMMIT-TEST-2026-0102", "SUMMIT-TEST-2026-0101"))
    report = one("summit-demo==1.0", AdvisoryDatabase.load(tmp_path))
    assert [a.id for a in report.advisories] == ["SUMMIT-TEST-2026-0101"]
    assert report.advisories[0].aliases == ("SUMMIT-TEST-2026-0102",)


def test_read_requirements(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        textwrap.dedent(
            """\
            # pinned by pip-compile
            --index-url https://pypi.example.invalid/simple
            -c constraints.txt

            PyYAML==5.3  # why: the loader we test against
            requests==2.31.0 \\
                --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000
            pkg @ https://example.invalid/pkg.whl#sha256=00
            -r more/requirements-extra.txt
            -r ../outside.txt
            -e ./vendor/lib
            """
        )
    )
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "requirements-extra.txt").write_text(
        "urllib3==1.26.4\n-r ../requirements.txt\n"
    )
    assert read_requirements(tmp_path) == [
        "PyYAML==5.3",
        "requests==2.31.0",
        "pkg @ https://example.invalid/pkg.whl#sha256=00",
        "urllib3==1.26.4",
        "-r ../outside.txt",
        "-e ./vendor/lib",
    ]


def test_requirements_end_to_end(tmp_path: Path, db: AdvisoryDatabase) -> None:
    (tmp_path / "requirements.txt").write_text("PyYAML==5.3\nrequests>=2\n-r ../outside.txt\n")
    statuses = [(r.name, r.status) for r in check(read_requirements(tmp_path), db)]
    assert statuses == [("pyyaml", "vulnerable"), ("requests", "unchecked"), (None, "unchecked")]


def test_no_requirements_file_or_a_symlinked_one_reads_as_none(tmp_path: Path) -> None:
    assert read_requirements(tmp_path) == []
    outside = tmp_path / "outside.txt"
    outside.write_text("PyYAML==5.3\n")
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "requirements.txt").symlink_to(outside)
    assert read_requirements(plugin) == []


def test_report_to_json(db: AdvisoryDatabase) -> None:
    assert one("PyYAML==5.3", db).to_json() == {
        "requirement": "PyYAML==5.3",
        "name": "pyyaml",
        "version": "5.3",
        "status": "vulnerable",
        "advisories": [
            {
                "id": "SUMMIT-TEST-2026-0001",
                "summary": "Test advisory: unsafe default loader in PyYAML before 5.4",
                "severity": "HIGH",
                "fixed": "5.4",
                "aliases": ["SUMMIT-TEST-ALIAS-0001"],
            }
        ],
        "reason": None,
    }
