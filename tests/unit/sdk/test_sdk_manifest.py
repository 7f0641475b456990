"""The manifest checks an author meets are the orchestrator's (:mod:`summit_sdk.manifest`).

Every rule is tested through the orchestrator's names in ``tests/unit/test_manifest.py``;
here: what the SDK adds (no orchestrator version to check against, its own error) and that
``summit-plugin`` applies the very same rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from summit_sdk.cli.manifest import ManifestError, check_manifest, load_manifest
from summit_sdk.manifest import (
    InvalidManifest,
    load_manifest_text,
    manifest_problems,
    parse_manifest,
)

from tests.fixtures.manifests import minimal_manifest as minimal


def test_the_summit_range_is_only_parsed_without_an_orchestrator_version() -> None:
    data = minimal(compatibility={"summit": ">=99"})
    assert parse_manifest(data).compatibility == {"summit": ">=99"}
    with pytest.raises(InvalidManifest) as info:
        parse_manifest(data, summit_version="0.1.0")
    assert info.value.errors == [
        {"path": "compatibility.summit", "message": "this orchestrator is 0.1.0, outside '>=99'"}
    ]
    assert manifest_problems(minimal(compatibility={"summit": "nope"}))[0]["path"] == (
        "compatibility.summit"
    )


def test_a_refusal_says_how_many_problems_and_lists_each() -> None:
    with pytest.raises(InvalidManifest) as info:
        parse_manifest(minimal(id="x", resources={"memory_mb": 1}))
    assert info.value.message == "the manifest has 2 error(s)"
    assert [e["path"] for e in info.value.errors] == ["id", "resources.memory_mb"]
    assert str(info.value).startswith("the manifest has 2 error(s): id: must be a reverse-DNS id")
    assert manifest_problems(minimal()) == []


def test_text_errors_are_manifest_errors_with_line_and_column() -> None:
    with pytest.raises(InvalidManifest) as info:
        load_manifest_text("a: [")
    assert info.value.message == "plugin.yaml is not valid YAML"
    assert info.value.errors[0]["path"].startswith("line 2, column ")


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"resources": {"memory_mb": 1}}, "resources.memory_mb: "),
        ({"network": {"allowed_hosts": ["api.example.com"]}}, "network.allowed_hosts: needs"),
        ({"config_schema": {"type": "objekt"}}, "config_schema: not a valid JSON Schema"),
        ({"dependencies": [{"id": "com.example.min"}]}, "dependencies[0].id: a plugin cannot"),
    ],
)
def test_the_author_meets_every_rule_of_the_install(
    tmp_path: Path, change: dict[str, Any], line: str
) -> None:
    """Rules the author's checks used to skip: now refused before a build, not at install."""
    data = minimal(**change)
    assert any(p.startswith(line) for p in check_manifest(data)), check_manifest(data)
    (tmp_path / "plugin.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ManifestError, match=r"plugin\.yaml: ") as info:
        load_manifest(tmp_path)
    assert line in str(info.value)


def test_the_author_gets_the_manifest_as_written(tmp_path: Path) -> None:
    """A build puts what the author wrote into the image, not the model's defaults."""
    data = minimal(resources={"memory_mb": 64})
    (tmp_path / "plugin.yaml").write_text(yaml.safe_dump(data))
    assert load_manifest(tmp_path) == data
