"""Scanning what an image holds, on a synthetic extracted tree: the plugin's own code through
the static scanner, installed Python distributions and npm lockfiles through the advisory
database (the invented records of tests/fixtures/osv, plus npm records made here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.security.advisories import AdvisoryDatabase, PackagePin, check_pins
from orchestrator.security.image_contents import (
    find_node_packages,
    find_python_packages,
    plugin_dir_of,
    scan_image_contents,
    selector,
)

OSV = Path(__file__).resolve().parents[2] / "fixtures" / "osv"
SITE = "opt/summit/lib/python3.11/site-packages"


def npm_record(
    osv_id: str, name: str, events: list[dict[str, str]], severity: str
) -> dict[str, Any]:
    return {
        "id": osv_id,
        "summary": f"Test advisory: {name}",
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": name},
                "ranges": [{"type": "SEMVER", "events": events}],
            }
        ],
        "database_specific": {"severity": severity},
    }


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> AdvisoryDatabase:
    folder = tmp_path_factory.mktemp("osv")
    shutil.copytree(OSV, folder, dirs_exist_ok=True)
    records = [
        npm_record(
            "SUMMIT-TEST-NPM-0001",
            "left-pad",
            [{"introduced": "0"}, {"fixed": "1.10.0"}],
            "HIGH",
        ),
        npm_record(
            "SUMMIT-TEST-NPM-0002",
            "@scope/widget",
            [{"introduced": "2.0.0-beta.1"}, {"last_affected": "2.1.0"}],
            "MODERATE",
        ),
    ]
    for record in records:
        (folder / f"{record['id']}.json").write_text(json.dumps(record))
    return AdvisoryDatabase.load(folder)


def dist_info(root: Path, site: str, name: str, version: str) -> Path:
    folder = root / site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\n"
        "Version: 0.0.1 (in the description: not a header)\n"
    )
    return folder


LOCK_V1 = {
    "name": "app",
    "version": "1.0.0",
    "lockfileVersion": 1,
    "dependencies": {
        "left-pad": {"version": "1.3.0"},
        "wrapper": {
            "version": "2.0.0",
            "dependencies": {"left-pad": {"version": "1.9.0"}},  # nested: another copy
        },
        "padder": {"version": "npm:left-pad@1.2.0"},  # an alias
        "from-git": {"version": "github:someone/from-git#abc123"},
    },
}

LOCK_V3 = {
    "name": "app",
    "version": "1.0.0",
    "lockfileVersion": 3,
    "packages": {
        "": {"name": "app", "version": "1.0.0"},
        "node_modules/left-pad": {"version": "1.10.0"},
        "node_modules/@scope/widget": {"version": "2.0.0"},
        "node_modules/x/node_modules/@scope/widget": {"version": "2.0.0-rc.1"},
        "node_modules/aliased": {"name": "@scope/widget", "version": "1.9.9"},
        "node_modules/local-lib": {"resolved": "packages/local-lib", "link": True},
        "packages/local-lib": {"version": "0.0.1"},
    },
}


def test_plugin_dir_comes_from_the_label_then_workdir() -> None:
    assert plugin_dir_of({}, None) == "/plugin"
    assert plugin_dir_of({}, "/srv/app/") == "/srv/app"
    assert plugin_dir_of({"io.summit.plugin-dir": "/code"}, "/srv/app") == "/code"
    # The root would make the whole image "the plugin's code"; relative makes no sense.
    assert plugin_dir_of({}, "/") == "/plugin"
    assert plugin_dir_of({"io.summit.plugin-dir": "relative"}, "/srv/../etc") == "/etc"


def test_the_selector_takes_only_what_the_scan_reads() -> None:
    wanted = selector("/plugin")
    assert wanted("/plugin", True) and wanted("/", True)
    assert wanted("/plugin/pkg", True)
    assert wanted("/plugin/app.py", False) and wanted("/plugin/native/fast.so", False)
    assert not wanted("/plugin/index.js", False)
    assert not wanted("/plugin/.venv/lib/x.py", False)  # a tool cache, as source_files skips
    assert wanted(f"/{SITE}/pyyaml-5.3.dist-info/METADATA", False)
    assert wanted("/usr/lib/python3/dist-packages/foo.egg-info/PKG-INFO", False)
    assert not wanted(f"/{SITE}/pyyaml-5.3.dist-info/RECORD", False)
    assert not wanted(f"/{SITE}/yaml/__init__.py", False)
    assert not wanted("/usr/lib/x86_64-linux-gnu/libc.so", False)
    assert wanted("/plugin/vendor/pkg-1.0.dist-info/METADATA", False)
    assert wanted("/app/package-lock.json", False)
    assert wanted("/app/node_modules/.package-lock.json", False)
    assert not wanted("/app/node_modules/dep/package-lock.json", False)
    assert not wanted("/etc", True) and not wanted("/usr/bin/python3", False)


def test_a_vulnerable_pinned_distribution_is_flagged(tmp_path: Path, db: AdvisoryDatabase) -> None:
    (tmp_path / "plugin").mkdir()
    dist_info(tmp_path, SITE, "PyYAML", "5.3")
    dist_info(tmp_path, SITE, "requests", "2.31.0")
    dist_info(tmp_path, "usr/lib/python3/dist-packages", "PyYAML", "5.3")  # the same pin twice
    scan = scan_image_contents(tmp_path, plugin_dir="/plugin", network_access=False, db=db)
    assert scan.findings == []
    assert scan.python_packages == 2
    reports = {d.requirement: d for d in scan.dependencies}
    assert set(reports) == {"pyyaml==5.3", "requests==2.31.0"}
    yaml = reports["pyyaml==5.3"]
    assert (yaml.status, yaml.ecosystem) == ("vulnerable", "PyPI")
    assert [(a.id, a.fixed) for a in yaml.advisories] == [("SUMMIT-TEST-2026-0001", "5.4")]
    assert yaml.locations == (
        f"/{SITE}/PyYAML-5.3.dist-info/METADATA",
        "/usr/lib/python3/dist-packages/PyYAML-5.3.dist-info/METADATA",
    )
    assert reports["requests==2.31.0"].status == "clean"  # the npm "requests" record is npm's
    assert yaml.to_json()["ecosystem"] == "PyPI"


def test_egg_info_and_plugin_local_distributions_are_found(tmp_path: Path) -> None:
    egg = tmp_path / "usr/lib/python3/dist-packages/Jinja2-2.10.egg-info"
    egg.mkdir(parents=True)
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Jinja2\nVersion: 2.10\n")
    single = tmp_path / "usr/lib/python3/dist-packages/old_thing-0.1.egg-info"
    single.write_text("Metadata-Version: 1.0\nName: old-thing\nVersion: 0.1\n")
    dist_info(tmp_path, "plugin/vendor", "urllib3", "1.26.4")
    dist_info(tmp_path, "srv/elsewhere", "ignored", "1.0")  # not a package folder
    pins = find_python_packages(tmp_path, plugin_dir="/plugin")
    # Named after PEP 503, so one distribution seen under two spellings is one pin.
    assert [(p.name, p.version) for p in pins] == [
        ("jinja2", "2.10"),
        ("old-thing", "0.1"),
        ("urllib3", "1.26.4"),
    ]


def test_lockfile_v1_packages_are_checked_against_npm_advisories(
    tmp_path: Path, db: AdvisoryDatabase
) -> None:
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin/package-lock.json").write_text(json.dumps(LOCK_V1))
    scan = scan_image_contents(tmp_path, plugin_dir="/plugin", network_access=False, db=db)
    reports = {d.requirement: d for d in scan.dependencies}
    assert set(reports) == {
        "left-pad@1.3.0",
        "left-pad@1.9.0",
        "left-pad@1.2.0",
        "wrapper@2.0.0",
        "from-git@github:someone/from-git#abc123",
    }
    for pin in ("left-pad@1.3.0", "left-pad@1.9.0", "left-pad@1.2.0"):
        report = reports[pin]
        assert (report.status, report.ecosystem) == ("vulnerable", "npm"), pin
        assert [(a.id, a.severity, a.fixed) for a in report.advisories] == [
            ("SUMMIT-TEST-NPM-0001", "HIGH", "1.10.0")
        ]
        assert report.locations == ("/plugin/package-lock.json",)
    assert reports["wrapper@2.0.0"].status == "clean"
    git = reports["from-git@github:someone/from-git#abc123"]
    assert git.status == "unchecked" and "semver" in (git.reason or "")


def test_lockfile_v3_packages_are_checked_with_semver_order(
    tmp_path: Path, db: AdvisoryDatabase
) -> None:
    app = tmp_path / "srv/app"
    app.mkdir(parents=True)
    (app / "package-lock.json").write_text(json.dumps(LOCK_V3))
    # A dependency's own lockfile says nothing about what is installed: not read.
    dep = app / "node_modules/wrapper"
    dep.mkdir(parents=True)
    (dep / "package-lock.json").write_text(json.dumps(LOCK_V1))
    pins = {(p.name, p.version): p for p in find_node_packages(tmp_path)}
    assert set(pins) == {
        ("left-pad", "1.10.0"),
        ("@scope/widget", "2.0.0"),
        ("@scope/widget", "2.0.0-rc.1"),
        ("@scope/widget", "1.9.9"),
    }
    reports = {d.requirement: d.status for d in check_pins(list(pins.values()), db)}
    assert reports == {
        # 1.10.0 is the fixed release: numerically above 1.9.x, not before it as text sorts.
        "left-pad@1.10.0": "clean",
        "@scope/widget@2.0.0": "vulnerable",
        # A release candidate sorts after beta.1 and before 2.0.0: inside the range.
        "@scope/widget@2.0.0-rc.1": "vulnerable",
        "@scope/widget@1.9.9": "clean",
    }


def test_the_hidden_lockfile_in_node_modules_is_read(tmp_path: Path) -> None:
    modules = tmp_path / "plugin/node_modules"
    modules.mkdir(parents=True)
    (modules / ".package-lock.json").write_text(json.dumps(LOCK_V3))
    assert ("left-pad", "1.10.0") in {(p.name, p.version) for p in find_node_packages(tmp_path)}


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"packages": []}', '{"dependencies": 1}'])
def test_a_broken_lockfile_yields_nothing(tmp_path: Path, text: str) -> None:
    (tmp_path / "package-lock.json").write_text(text)
    assert find_node_packages(tmp_path) == []


def test_a_dangerous_call_in_plugin_code_is_a_finding(tmp_path: Path, db: AdvisoryDatabase) -> None:
    code = tmp_path / "plugin"
    code.mkdir()
    (code / "plugin.py").write_text("def run(x):\n    return x\n")
    (code / "helpers.py").write_text("import os\n\n\ndef clean(p):\n    os.system('rm ' + p)\n")
    scan = scan_image_contents(tmp_path, plugin_dir="/plugin", network_access=False, db=db)
    rules = {(f.file, f.line, f.rule, f.severity) for f in scan.findings}
    assert ("/plugin/helpers.py", 5, "summit:process-exec", "HIGH") in rules
    assert not any(f.file == "/plugin/plugin.py" for f in scan.findings)
    assert scan.code_files == 2


def test_a_clean_image_has_no_findings(tmp_path: Path, db: AdvisoryDatabase) -> None:
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin/plugin.py").write_text("def run(x):\n    return x\n")
    dist_info(tmp_path, SITE, "PyYAML", "6.0.1")
    scan = scan_image_contents(tmp_path, plugin_dir="/plugin", network_access=False, db=db)
    assert scan.findings == []
    assert [d.status for d in scan.dependencies] == ["clean"]


def test_a_missing_or_linked_plugin_folder_is_a_high_finding(tmp_path: Path) -> None:
    missing = scan_image_contents(tmp_path, plugin_dir="/plugin", network_access=False, db=None)
    assert [(f.file, f.rule, f.severity) for f in missing.findings] == [
        ("/plugin", "summit:scan-error", "HIGH")
    ]
    (tmp_path / "plugin").mkdir()
    linked = scan_image_contents(
        tmp_path,
        plugin_dir="/plugin",
        network_access=False,
        db=None,
        links={"/plugin": "/srv/hidden"},
    )
    assert [f.rule for f in linked.findings] == ["summit:scan-error"]
    assert "symbolic link" in linked.findings[0].message


def test_an_unreadable_hard_link_in_the_plugin_is_a_finding(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    scan = scan_image_contents(
        tmp_path,
        plugin_dir="/plugin",
        network_access=False,
        db=None,
        unresolved=["/plugin/sneaky.py", "/usr/bin/ignored"],
    )
    assert [(f.file, f.severity) for f in scan.findings] == [("/plugin/sneaky.py", "HIGH")]


def test_without_a_database_every_package_is_unchecked(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    dist_info(tmp_path, SITE, "PyYAML", "5.3")
    scan = scan_image_contents(tmp_path, plugin_dir="/plugin", network_access=False, db=None)
    [report] = scan.dependencies
    assert (report.status, report.requirement) == ("unchecked", "pyyaml==5.3")
    assert "SUMMIT_ADVISORY_DB" in (report.reason or "")


def test_pins_that_their_ecosystem_cannot_order_are_unchecked(db: AdvisoryDatabase) -> None:
    reports = check_pins(
        [
            PackagePin("PyPI", "PyYAML", "not-a-version"),
            PackagePin("npm", "left-pad", "file:../left-pad"),
            PackagePin("npm", "left-pad", "v1.3.0"),  # npm's clean() drops the v
        ],
        db,
    )
    assert [(r.status, r.version) for r in reports] == [
        ("unchecked", None),
        ("unchecked", None),
        ("vulnerable", "v1.3.0"),
    ]
    assert db.count("npm") == 3 and len(db) == 5
