"""The manifest as the code sees it: generation from the builder and decorators, and the
build-time comparison with a hand-written plugin.yaml (``summit-plugin manifest``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from summit_sdk import Analyzer, analyzer, create_plugin, workflow
from summit_sdk.cli import app
from summit_sdk.cli.introspect import compare, describe, generate
from summit_sdk.cli.manifest import check_manifest
from summit_sdk.points import AnalyzerInput, AnalyzerOutput, WorkflowInput, WorkflowResult
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[3]


class Keywords(Analyzer):
    def analyze(self, input: AnalyzerInput, ctx: Any) -> AnalyzerOutput:
        return AnalyzerOutput(findings=[])


def _plugin() -> Any:
    return (
        create_plugin()
        .with_metadata(id="com.example.kw", version="1.2.0", name="Keywords")
        .request_permissions("events:publish", "events:subscribe")
        .with_config_schema({"type": "object"})
        .publishes("kw.done")
        .on_event("document.created", lambda event, ctx: None)
        .extension("analyzer", "keywords", Keywords(), priority=10, idempotent=True)
        .extension(
            "workflow",
            "plain",
            lambda input, ctx: input,
            input_schema={"type": "object", "required": ["action"]},
        )
        .build()
    )


def test_describe_takes_schemas_from_typed_models_and_options_from_the_builder() -> None:
    described = describe(_plugin())
    assert described["id"] == "com.example.kw" and described["version"] == "1.2.0"
    assert described["permissions"] == ["events:publish", "events:subscribe"]
    kw, plain = described["extensions"]
    assert (kw["point"], kw["name"], kw["priority"], kw["idempotent"]) == (
        "analyzer",
        "keywords",
        10,
        True,
    )
    assert "timeout_ms" not in kw
    # The derived schema accepts what the model accepts and refuses what it refuses.
    jsonschema.validate({"text": "hi"}, kw["input_schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"text": 3}, kw["input_schema"])
    jsonschema.validate({"findings": [{"label": "a", "score": 0.5}]}, kw["output_schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"findings": [{"label": "a", "score": 2}]}, kw["output_schema"])
    assert kw["explicit_schemas"] == []
    assert plain["input_schema"] == {"type": "object", "required": ["action"]}
    assert "output_schema" not in plain and plain["explicit_schemas"] == ["input_schema"]
    assert described["subscribe"] == ["document.created"] and described["publish"] == ["kw.done"]


def test_decorator_options_and_models_reach_the_description() -> None:
    import types

    module = types.ModuleType("deco_mod")

    def run(input: WorkflowInput, ctx: Any) -> WorkflowResult:
        return WorkflowResult(status="ok")

    run.__module__ = "deco_mod"
    module.run = workflow(  # type: ignore[attr-defined]
        "go", input_model=WorkflowInput, output_model=WorkflowResult, timeout_ms=900
    )(run)
    module.PLUGIN_ID, module.PLUGIN_VERSION = "com.example.deco", "0.1.0"  # type: ignore[attr-defined]
    from summit_sdk import collect

    (entry,) = describe(collect(module))["extensions"]
    assert entry["timeout_ms"] == 900 and entry["input_schema"]["title"] == "WorkflowInput"
    assert entry["output_schema"]["title"] == "WorkflowResult"


def test_generate_keeps_what_the_code_cannot_know_and_is_a_valid_manifest() -> None:
    base = {
        "schema_version": 1,
        "id": "com.example.kw",
        "name": "Old name",
        "version": "1.0.0",
        "authors": ["A <a@example.com>"],
        "runtime": {"base": "python", "entrypoint": "old:plugin"},
        "resources": {"memory_mb": 64},
        "extensions": [
            {"point": "analyzer", "name": "keywords", "priority": 50, "timeout_ms": 700},
            {"point": "export", "name": "gone"},
        ],
        "events": {"publish": ["other.type"]},
    }
    manifest = generate(describe(_plugin()), base, "kw:plugin")
    assert check_manifest(manifest) == []
    assert manifest["name"] == "Keywords" and manifest["version"] == "1.2.0"
    assert manifest["authors"] == base["authors"] and manifest["resources"] == {"memory_mb": 64}
    assert manifest["runtime"]["entrypoint"] == "kw:plugin"
    kw = manifest["extensions"][0]
    # the code's priority wins; the yaml's timeout (not set in code) stays
    assert kw["priority"] == 10 and kw["timeout_ms"] == 700
    assert [e["name"] for e in manifest["extensions"]] == ["keywords", "plain"]
    assert manifest["events"] == {"publish": ["kw.done"], "subscribe": ["document.created"]}
    assert compare(describe(_plugin()), manifest) == []
    assert base["name"] == "Old name"  # the input is not modified


def test_compare_lists_every_disagreement() -> None:
    manifest = generate(describe(_plugin()), None, "kw:plugin")
    manifest["version"] = "9.9.9"
    manifest["permissions"] = ["events:publish"]
    manifest["extensions"][0]["priority"] = 11
    manifest["extensions"][1]["input_schema"] = {"type": "object"}
    manifest["extensions"].append({"point": "export", "name": "ghost"})
    manifest["events"] = {"subscribe": ["document.deleted"]}
    problems = compare(describe(_plugin()), manifest)
    text = "\n".join(problems)
    assert "version: the code says '1.2.0', plugin.yaml '9.9.9'" in text
    assert "permissions: the code requests" in text
    assert "analyzer/keywords.priority differs (code 10, plugin.yaml 11)" in text
    assert "workflow/plain.input_schema differs" in text
    assert "export/ghost is in plugin.yaml but has no handler" in text
    assert "the code handles 'document.created'; plugin.yaml omits it" in text
    assert "'document.deleted' is subscribed but the code has no handler" in text
    assert "the code publishes 'kw.done'; plugin.yaml omits it" in text
    assert len(problems) == 8


def test_derived_schemas_may_differ_from_hand_written_ones() -> None:
    manifest = generate(describe(_plugin()), None, "kw:plugin")
    manifest["extensions"][0]["input_schema"] = {"type": "object", "required": ["text"]}
    assert compare(describe(_plugin()), manifest) == []


def test_a_wildcard_handler_accepts_every_subscription() -> None:
    plugin = (
        create_plugin()
        .with_metadata(id="com.example.all", version="1.0.0")
        .on_event("*", lambda e, c: None)
        .extension("analyzer", "a", lambda i, c: i)
        .build()
    )
    manifest = generate(describe(plugin), None, "m:plugin")
    manifest["events"] = {"subscribe": ["a.b", "c.d"]}
    assert compare(describe(plugin), manifest) == []


@analyzer("never")
def _unused(input: Any, ctx: Any) -> Any:  # only here so the decorator import is used
    return input


# --------------------------------------------------------------------------- the CLI


def _project(tmp_path: Path, code: str, manifest: dict[str, Any] | None) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "mod.py").write_text(textwrap.dedent(code))
    if manifest is not None:
        (folder / "plugin.yaml").write_text(yaml.safe_dump(manifest))
    return folder


CODE = """
    from summit_sdk import create_plugin

    print("module-level output goes to stderr, not into the manifest")
    plugin = (
        create_plugin()
        .with_metadata(id="com.example.gen", version="0.3.0", name="Gen")
        .extension("analyzer", "gen", lambda input, ctx: input, priority=5)
        .build()
    )
"""


def test_cli_manifest_generates_writes_and_checks(tmp_path: Path) -> None:
    folder = _project(tmp_path, CODE, None)
    runner = CliRunner()
    shown = runner.invoke(app, ["manifest", str(folder), "--entrypoint", "mod:plugin"])
    assert shown.exit_code == 0, shown.output
    generated = yaml.safe_load(shown.stdout)
    assert generated["id"] == "com.example.gen" and generated["extensions"][0]["priority"] == 5
    assert not (folder / "plugin.yaml").exists()

    wrote = runner.invoke(app, ["manifest", str(folder), "-e", "mod:plugin", "--write"])
    assert wrote.exit_code == 0
    assert yaml.safe_load((folder / "plugin.yaml").read_text()) == generated
    assert runner.invoke(app, ["manifest", str(folder), "--check"]).exit_code == 0

    edited = dict(generated, version="0.4.0")
    (folder / "plugin.yaml").write_text(yaml.safe_dump(edited))
    checked = runner.invoke(app, ["manifest", str(folder), "--check"])
    assert checked.exit_code == 2
    assert "version: the code says '0.3.0', plugin.yaml '0.4.0'" in checked.stderr
    assert len(checked.stderr.strip().splitlines()) == 1


def test_cli_reports_code_that_does_not_import_in_one_line(tmp_path: Path) -> None:
    folder = _project(tmp_path, "import not_installed_anywhere\n", None)
    result = CliRunner().invoke(app, ["manifest", str(folder), "-e", "mod:plugin"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot load mod:plugin:")
    assert "not_installed_anywhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_build_refuses_a_manifest_that_contradicts_the_code_before_docker(tmp_path: Path) -> None:
    folder = _project(tmp_path, CODE, None)
    runner = CliRunner()
    assert runner.invoke(app, ["manifest", str(folder), "-e", "mod:plugin", "-w"]).exit_code == 0
    manifest = yaml.safe_load((folder / "plugin.yaml").read_text())
    manifest["extensions"].append({"point": "export", "name": "missing"})
    (folder / "plugin.yaml").write_text(yaml.safe_dump(manifest))
    # No Docker is contacted: the check fails first (DOCKER_HOST points nowhere).
    env = {"DOCKER_HOST": "unix:///nonexistent.sock"}
    result = runner.invoke(app, ["build", str(folder)], env=env)
    assert result.exit_code == 2
    assert "export/missing is in plugin.yaml but has no handler" in result.stderr


def test_cli_test_checks_then_runs_pytest_with_its_exit_status(tmp_path: Path) -> None:
    folder = _project(tmp_path, CODE, None)
    runner = CliRunner()
    assert runner.invoke(app, ["manifest", str(folder), "-e", "mod:plugin", "-w"]).exit_code == 0
    tests = folder / "tests"
    tests.mkdir()
    (tests / "test_mod.py").write_text(
        textwrap.dedent(
            """
            from summit_sdk.testing import PluginTestClient
            from mod import plugin

            def test_echo():
                with PluginTestClient(plugin) as client:
                    assert client.call("analyzer", "gen", {"a": 1}) == {"a": 1}
            """
        )
    )
    (folder / "conftest.py").write_text("")  # puts the project folder on sys.path
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    script = [sys.executable, "-c", "from summit_sdk.cli import app; app()"]
    passed = subprocess.run(
        [*script, "test", str(folder), "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed" in passed.stdout
    (tests / "test_mod.py").write_text("def test_fails():\n    assert False\n")
    failed = subprocess.run(
        [*script, "test", str(folder), "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert failed.returncode == 1 and "1 failed" in failed.stdout


@pytest.mark.parametrize(
    "example", sorted(p.parent.name for p in (REPO / "examples").glob("*/plugin.yaml"))
)
def test_every_example_manifest_matches_its_code(example: str) -> None:
    result = CliRunner().invoke(app, ["manifest", str(REPO / "examples" / example), "--check"])
    assert result.exit_code == 0, result.output
