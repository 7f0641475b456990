"""``summit-plugin new``: a valid, self-testing project per extension point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from summit_sdk.cli import app
from summit_sdk.cli.manifest import ManifestError, check_manifest, load_manifest
from summit_sdk.cli.samples import sample_from_schema
from summit_sdk.spec import EXTENSION_POINTS
from typer.testing import CliRunner

from orchestrator.domain.manifest import parse_manifest

runner = CliRunner()


def _new(tmp_path: Path, name: str, point: str) -> Path:
    result = runner.invoke(app, ["new", name, "--point", point, "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path / name


@pytest.mark.parametrize("point", EXTENSION_POINTS)
def test_new_writes_a_valid_project(tmp_path: Path, point: str) -> None:
    name = f"my-{point.replace('_', '-')}"
    module = name.replace("-", "_")
    project = _new(tmp_path, name, point)
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()) == [
        ".gitignore",
        "README.md",
        f"{module}.py",
        "plugin.yaml",
        f"tests/test_{module}.py",
    ]
    data = yaml.safe_load((project / "plugin.yaml").read_text())
    assert data["id"] == f"com.example.{name}"
    assert data["extensions"][0]["point"] == point and data["extensions"][0]["name"] == name
    # one set of checks, read through the orchestrator's names and through the CLI's
    manifest = parse_manifest(data)
    assert manifest.runtime.entrypoint == f"{module}:plugin"
    assert load_manifest(project) == data
    code = (project / f"{module}.py").read_text()
    assert "create_plugin()" in code and "from summit_sdk import" in code
    test_code = (project / "tests" / f"test_{module}.py").read_text()
    assert "create_app" in test_code and "TestClient" in test_code


def _run_project_tests(project: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("point", EXTENSION_POINTS)
def test_generated_tests_pass(tmp_path: Path, point: str) -> None:
    project = _new(tmp_path, f"gen-{point.replace('_', '-')}", point)
    result = _run_project_tests(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


@pytest.mark.parametrize("point", EXTENSION_POINTS)
def test_generated_handler_accepts_the_verify_sample(tmp_path: Path, point: str) -> None:
    """What `verify` sends (a sample from input_schema) is answered with a valid output."""
    import jsonschema
    from starlette.testclient import TestClient
    from summit_sdk.runtime import create_app, load_entrypoint

    name = f"s-{point.replace('_', '-')}"
    project = _new(tmp_path, name, point)
    ext = load_manifest(project)["extensions"][0]
    cwd = os.getcwd()
    os.chdir(project)
    try:
        plugin = load_entrypoint(f"{name.replace('-', '_')}:plugin")
    finally:
        os.chdir(cwd)
        sys.modules.pop(name.replace("-", "_"), None)
    with TestClient(create_app(plugin)) as client:
        body = {"input": sample_from_schema(ext["input_schema"]), "context": {"request_id": "x"}}
        response = client.post(f"/summit/v1/extensions/{point}/{name}", json=body)
        assert response.status_code == 200, response.text
        jsonschema.validate(response.json()["output"], ext["output_schema"])


def test_new_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    result = runner.invoke(app, ["new", "taken", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "not empty" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # an existing empty folder is fine
    (tmp_path / "empty").mkdir()
    assert runner.invoke(app, ["new", "empty", "--dir", str(tmp_path)]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["new", "Bad_Name"], "invalid plugin name"),
        (["new", "ok-name", "--point", "nope"], "unknown extension point"),
    ],
)
def test_new_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not any(tmp_path.iterdir())


def test_manifest_checks_list_every_problem(tmp_path: Path) -> None:
    problems = check_manifest(
        {
            "schema_version": 2,
            "id": "NoDots",
            "name": "",
            "version": "1.0",
            "runtime": {"entrypoint": "nocolon"},
            "extensions": [{"point": "nope", "name": "x"}, {"point": "nope", "name": "x"}],
        }
    )
    joined = "\n".join(problems)
    for field in (
        "schema_version",
        "id:",
        "name:",
        "version:",
        "runtime.entrypoint",
        "extensions[0].point",
        "extensions[1]: nope/x is declared twice",
    ):
        assert field in joined
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path)
    (tmp_path / "plugin.yaml").write_text("a: [")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(tmp_path)


def test_build_refuses_a_folder_without_manifest(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", str(tmp_path)])
    assert result.exit_code == 2
    assert "plugin.yaml" in result.stderr
