"""``plugin.yaml`` validation: every problem is reported at once, each with its path."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from summit_sdk import manifest as sdk_manifest
from summit_sdk import spec

from orchestrator.domain.manifest import (
    ExtensionPoint,
    Manifest,
    ManifestError,
    Permission,
    load_manifest_text,
    parse_manifest,
)
from tests.fixtures.manifests import minimal_manifest as minimal

REPO = Path(__file__).resolve().parents[3]


def full_manifest() -> dict[str, Any]:
    """Every section of the design's example, valid."""
    return {
        "schema_version": 1,
        "id": "com.example.word-count",
        "name": "Word Count",
        "version": "1.2.0",
        "description": "Counts words in documents",
        "authors": ["Example Ltd <dev@example.com>"],
        "license": "MIT",
        "runtime": {"base": "python", "entrypoint": "word_count:plugin"},
        "compatibility": {"summit": ">=0.1,<1"},
        "dependencies": [{"id": "com.example.tokenizer", "version": "^1.0"}],
        "extensions": [
            {
                "point": "analyzer",
                "name": "word-count",
                "priority": 100,
                "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                "output_schema": {"type": "object"},
            }
        ],
        "permissions": ["read:data", "network:access", "events:publish", "events:subscribe"],
        "network": {"allowed_hosts": ["api.example.com", "*.example.org"]},
        "events": {"subscribe": ["document.created"], "publish": ["wordcount.done"]},
        "resources": {
            "memory_mb": 256,
            "cpu_percent": 50,
            "storage_mb": 100,
            "network_mbps": 10,
            "timeout_ms": 30000,
        },
        "config_schema": {"type": "object", "properties": {"top": {"type": "integer"}}},
    }


def errors_of(data: Any) -> list[dict[str, str]]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert info.value.status_code == 422
    assert info.value.code == "invalid_manifest"
    details = info.value.details
    assert isinstance(details, list) and details, "a refused manifest names its problems"
    for d in details:
        assert set(d) == {"path", "message"} and d["message"]
    return details


def paths_of(data: Any) -> list[str]:
    return sorted(d["path"] for d in errors_of(data))


# --- accepted manifests -------------------------------------------------------------------


def test_the_design_example_parses_with_its_values() -> None:
    m = parse_manifest(full_manifest())
    assert m.id == "com.example.word-count"
    assert str(m.semver) == "1.2.0"
    assert m.extensions[0].point is ExtensionPoint.ANALYZER
    assert Permission.NETWORK_ACCESS in m.permissions
    assert m.dependencies[0].version == "^1.0"
    assert m.network.allowed_hosts == ["api.example.com", "*.example.org"]


def test_omitted_sections_get_the_design_defaults() -> None:
    m = parse_manifest(minimal())
    r = m.resources
    assert (r.memory_mb, r.cpu_percent, r.storage_mb, r.network_mbps, r.timeout_ms) == (
        256,
        50,
        100,
        10,
        30000,
    )
    assert m.permissions == [] and m.extensions == [] and m.dependencies == []


def test_prebuilt_image_runtime_is_accepted() -> None:
    data = minimal()
    data["runtime"] = {"image": "registry.example.com/plugins/x@sha256:" + "a" * 64}
    assert parse_manifest(data).runtime.image is not None


def test_to_json_round_trips() -> None:
    m = parse_manifest(full_manifest())
    assert parse_manifest(m.to_json()) == m


@pytest.mark.parametrize(
    "path",
    [
        REPO / "examples/word-count/plugin.yaml",
        *sorted(REPO.glob("tests/fixtures/plugins/*/plugin.yaml")),
    ],
    ids=lambda p: p.parent.name,
)
def test_shipped_manifests_parse(path: Path) -> None:
    m = load_manifest_text(path.read_text())
    assert m.id.startswith("com.")
    assert m.extensions, "every shipped plugin offers at least one extension"


def test_json_text_is_accepted_as_yaml() -> None:
    import json

    assert load_manifest_text(json.dumps(minimal())).id == "com.example.min"


# --- every error, with its path ------------------------------------------------------------


def test_every_error_is_listed_with_indexed_paths() -> None:
    data = full_manifest()
    data["id"] = "NotReverseDns"
    data["extensions"].append({"point": "teleporter", "name": "Bad Name!"})
    data["permissions"] = ["read:data", "root"]
    data["resources"]["memory_mb"] = 1
    data["dependencies"][0]["version"] = "not a range"
    # Dropping network:access and the events permissions also breaks the rules that need them.
    assert paths_of(data) == [
        "dependencies[0].version",
        "events.publish",
        "events.subscribe",
        "extensions[1].name",
        "extensions[1].point",
        "id",
        "network.allowed_hosts",
        "permissions[1]",
        "resources.memory_mb",
    ]


def test_field_errors_and_cross_field_errors_are_reported_together() -> None:
    data = full_manifest()
    data["version"] = "1.0"  # field error
    data["permissions"] = ["read:data"]  # now allowed_hosts and events lack their permission
    assert paths_of(data) == [
        "events.publish",
        "events.subscribe",
        "network.allowed_hosts",
        "version",
    ]


def test_error_messages_are_not_prefixed_with_pydantic_noise() -> None:
    data = minimal()
    data["id"] = "x"
    [err] = errors_of(data)
    assert err["path"] == "id"
    assert not err["message"].startswith("Value error")
    assert "reverse-DNS" in err["message"]


def test_a_non_mapping_is_refused_at_the_root() -> None:
    assert paths_of(["schema_version", 1]) == ["(root)"]
    assert paths_of(None) == ["(root)"]


# --- top level ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["schema_version", "id", "name", "version", "runtime"])
def test_required_keys(key: str) -> None:
    data = minimal()
    del data[key]
    assert paths_of(data) == [key]


@pytest.mark.parametrize("value", [0, 2, "one"])
def test_schema_version_must_be_1(value: Any) -> None:
    assert paths_of({**minimal(), "schema_version": value}) == ["schema_version"]


@pytest.mark.parametrize(
    "plugin_id",
    [
        "wordcount",
        "Com.Example.X",
        "com..example",
        "com.example.",
        ".com.example",
        "com.ex ample",
        "com.example_x",
        "1com.example",
    ],
)
def test_id_must_be_reverse_dns(plugin_id: str) -> None:
    assert paths_of({**minimal(), "id": plugin_id}) == ["id"]


def test_id_with_trailing_newline_is_refused() -> None:
    assert paths_of({**minimal(), "id": "com.example.x\n"}) == ["id"]


@pytest.mark.parametrize("version", ["1.0", "1", "v1.0.0", "1.0.0.0", "01.0.0", 1.0])
def test_version_must_be_semver(version: Any) -> None:
    assert paths_of({**minimal(), "version": version}) == ["version"]


def test_unknown_keys_are_refused_at_any_depth() -> None:
    data = full_manifest()
    data["colour"] = "blue"
    data["runtime"]["gpu"] = True
    data["extensions"][0]["weight"] = 3
    assert paths_of(data) == ["colour", "extensions[0].weight", "runtime.gpu"]


# --- runtime ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "runtime",
    [
        {},
        {"base": "python"},
        {"entrypoint": "m:plugin"},
        {"image": "x/y:1", "base": "python", "entrypoint": "m:plugin"},
        {"image": "x/y:1", "entrypoint": "m:plugin"},
    ],
)
def test_runtime_needs_exactly_image_or_base_with_entrypoint(runtime: dict[str, str]) -> None:
    assert paths_of({**minimal(), "runtime": runtime}) == ["runtime"]


@pytest.mark.parametrize("entrypoint", ["word_count", "word_count:", ":plugin", "a:b:c", "1m:x"])
def test_entrypoint_must_be_module_colon_object(entrypoint: str) -> None:
    data = {**minimal(), "runtime": {"base": "python", "entrypoint": entrypoint}}
    assert paths_of(data) == ["runtime.entrypoint"]


def test_dotted_module_entrypoint_is_fine() -> None:
    data = {**minimal(), "runtime": {"base": "python", "entrypoint": "pkg.sub_mod:plugin"}}
    assert parse_manifest(data).runtime.entrypoint == "pkg.sub_mod:plugin"


def test_unknown_base_is_refused() -> None:
    data = {**minimal(), "runtime": {"base": "node", "entrypoint": "m:plugin"}}
    assert "runtime.base" in paths_of(data)


# --- compatibility -----------------------------------------------------------------------


@pytest.mark.parametrize("rng", [">=0.1,<1", "^0.1", "0.x", "*", "~0.1.0", "<0.1 || >=0.1"])
def test_summit_ranges_admitting_this_orchestrator_pass(rng: str) -> None:
    parse_manifest({**minimal(), "compatibility": {"summit": rng}})


@pytest.mark.parametrize("rng", [">=0.2", "^1.0", "<0.1", "0.0.x"])
def test_summit_range_excluding_this_orchestrator_is_refused(rng: str) -> None:
    [err] = errors_of({**minimal(), "compatibility": {"summit": rng}})
    assert err["path"] == "compatibility.summit"
    assert "0.1.0" in err["message"], "the message says which orchestrator version this is"


def test_compatibility_range_syntax_is_checked_for_every_product() -> None:
    data = {**minimal(), "compatibility": {"summit": "bogus", "platform": ">=>1"}}
    assert paths_of(data) == ["compatibility.platform", "compatibility.summit"]


def test_other_products_are_not_checked_against_summit_version() -> None:
    parse_manifest({**minimal(), "compatibility": {"platform": ">=7"}})


# --- dependencies --------------------------------------------------------------------------


def test_dependency_errors_carry_their_index() -> None:
    data = minimal()
    data["dependencies"] = [
        {"id": "com.example.ok", "version": "^1.0"},
        {"id": "tokenizer"},
        {"id": "com.example.other", "version": ">=banana"},
    ]
    assert paths_of(data) == ["dependencies[1].id", "dependencies[2].version"]


def test_dependency_version_defaults_to_any() -> None:
    data = {**minimal(), "dependencies": [{"id": "com.example.dep"}]}
    assert parse_manifest(data).dependencies[0].version == "*"


def test_self_dependency_is_refused() -> None:
    data = {**minimal(), "dependencies": [{"id": "com.example.min", "version": "*"}]}
    assert paths_of(data) == ["dependencies[0].id"]


def test_duplicate_dependency_is_refused_at_the_repeat() -> None:
    data = minimal()
    data["dependencies"] = [
        {"id": "com.example.a"},
        {"id": "com.example.b"},
        {"id": "com.example.a", "version": "^2"},
    ]
    [err] = errors_of(data)
    assert err["path"] == "dependencies[2].id"
    assert "com.example.a" in err["message"]


# --- extensions ------------------------------------------------------------------------------


@pytest.mark.parametrize("point", [p.value for p in ExtensionPoint])
def test_every_design_extension_point_is_accepted(point: str) -> None:
    data = {**minimal(), "extensions": [{"point": point, "name": "x"}]}
    assert parse_manifest(data).extensions[0].point.value == point


def test_the_model_and_its_checks_are_the_sdks() -> None:
    """One contract: the extension points are the protocol's, and the orchestrator's manifest
    is the SDK's model (``summit-plugin`` checks with it too)."""
    assert ExtensionPoint is spec.ExtensionPoint
    assert tuple(ExtensionPoint) == spec.EXTENSION_POINTS
    assert Manifest is sdk_manifest.Manifest and Permission is sdk_manifest.Permission


@pytest.mark.parametrize("name", ["Word", "word count", "-lead", "", "x" * 64, "wörd"])
def test_extension_name_must_be_a_slug(name: str) -> None:
    data = {**minimal(), "extensions": [{"point": "analyzer", "name": name}]}
    assert paths_of(data) == ["extensions[0].name"]


def test_duplicate_point_and_name_is_refused_but_same_name_on_another_point_is_not() -> None:
    data = minimal()
    data["extensions"] = [
        {"point": "analyzer", "name": "x"},
        {"point": "export", "name": "x"},
        {"point": "analyzer", "name": "y"},
        {"point": "analyzer", "name": "x"},
    ]
    [err] = errors_of(data)
    assert err["path"] == "extensions[3]"


@pytest.mark.parametrize("field", ["input_schema", "output_schema"])
def test_extension_schemas_must_be_json_schema(field: str) -> None:
    data = minimal()
    data["extensions"] = [
        {"point": "analyzer", "name": "ok"},
        {"point": "analyzer", "name": "bad", field: {"type": "objekt"}},
    ]
    [err] = errors_of(data)
    assert err["path"] == f"extensions[1].{field}"
    assert "JSON Schema" in err["message"]


def test_schema_checks_remembered_only_for_plain_json_that_passed() -> None:
    """Valid schemas are remembered by their JSON text; nothing else may ride on that."""
    good = {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}}
    for _ in range(2):  # checked, then remembered: the same answer
        data = minimal()
        data["extensions"] = [{"point": "analyzer", "name": "x", "input_schema": good}]
        assert parse_manifest(data).extensions[0].input_schema == good
    # Same text once turned into JSON, but a YAML date where a string must be: still refused.
    data = minimal()
    bad = {"type": "object", "properties": {"when": {"type": "string", "format": date(2024, 1, 1)}}}
    good_text = {
        "type": "object",
        "properties": {"when": {"type": "string", "format": "2024-01-01"}},
    }
    data["extensions"] = [
        {"point": "analyzer", "name": "x", "input_schema": good_text},
        {"point": "analyzer", "name": "y", "input_schema": bad},
    ]
    [err] = errors_of(data)
    assert err["path"] == "extensions[1].input_schema"
    # An invalid schema is never remembered.
    data = minimal()
    data["extensions"] = [{"point": "analyzer", "name": "x", "input_schema": {"type": "objekt"}}]
    assert len(errors_of(data)) == len(errors_of(data)) == 1


@pytest.mark.parametrize("priority", [-1, 10001])
def test_extension_priority_bounds(priority: int) -> None:
    data = {**minimal(), "extensions": [{"point": "analyzer", "name": "x", "priority": priority}]}
    assert paths_of(data) == ["extensions[0].priority"]


# --- permissions, network, events ----------------------------------------------------------


def test_permission_set_is_the_designs() -> None:
    assert {p.value for p in Permission} == {
        "read:data",
        "write:data",
        "network:access",
        "storage",
        "events:publish",
        "events:subscribe",
        "secrets:read",
        "plugins:invoke",
    }


def test_unknown_permission_is_refused_with_its_index() -> None:
    data = {**minimal(), "permissions": ["read:data", "write:data", "admin"]}
    assert paths_of(data) == ["permissions[2]"]


def test_duplicate_permission_is_refused() -> None:
    data = {**minimal(), "permissions": ["read:data", "storage", "read:data"]}
    assert paths_of(data) == ["permissions"]


def test_allowed_hosts_need_network_access() -> None:
    data = {**minimal(), "network": {"allowed_hosts": ["api.example.com"]}}
    [err] = errors_of(data)
    assert err["path"] == "network.allowed_hosts"
    assert "network:access" in err["message"]
    data["permissions"] = ["network:access"]
    parse_manifest(data)


@pytest.mark.parametrize("host", ["https://api.example.com", "api.example.com/x", "*", "a b"])
def test_allowed_hosts_are_host_names(host: str) -> None:
    data = {**minimal(), "permissions": ["network:access"], "network": {"allowed_hosts": [host]}}
    assert paths_of(data) == ["network.allowed_hosts"]


@pytest.mark.parametrize(
    ("section", "permission"), [("publish", "events:publish"), ("subscribe", "events:subscribe")]
)
def test_events_need_their_permission(section: str, permission: str) -> None:
    data = {**minimal(), "events": {section: ["document.created"]}}
    [err] = errors_of(data)
    assert err["path"] == f"events.{section}"
    assert permission in err["message"]
    data["permissions"] = [permission]
    parse_manifest(data)


def test_subscribing_does_not_grant_publishing() -> None:
    data = {
        **minimal(),
        "permissions": ["events:subscribe"],
        "events": {"subscribe": ["a.b"], "publish": ["c.d"]},
    }
    assert paths_of(data) == ["events.publish"]


# --- resources and config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("memory_mb", 15),
        ("memory_mb", 65537),
        ("cpu_percent", 0),
        ("cpu_percent", 1601),
        ("storage_mb", -1),
        ("network_mbps", -1),
        ("timeout_ms", 0),
        ("timeout_ms", 600_001),
        ("memory_mb", "lots"),
    ],
)
def test_resources_out_of_bounds(field: str, value: Any) -> None:
    data = {**minimal(), "resources": {field: value}}
    assert paths_of(data) == [f"resources.{field}"]


def test_resources_at_their_bounds_are_accepted() -> None:
    low = {"memory_mb": 16, "cpu_percent": 1, "storage_mb": 0, "network_mbps": 0, "timeout_ms": 1}
    high = {"memory_mb": 65536, "cpu_percent": 1600, "timeout_ms": 600_000}
    assert parse_manifest({**minimal(), "resources": low}).resources.memory_mb == 16
    assert parse_manifest({**minimal(), "resources": high}).resources.cpu_percent == 1600


@pytest.mark.parametrize(
    "schema", [{"type": "objekt"}, {"properties": 5}, {"required": "x"}, {"minimum": "0"}]
)
def test_config_schema_must_be_json_schema(schema: dict[str, Any]) -> None:
    [err] = errors_of({**minimal(), "config_schema": schema})
    assert err["path"] == "config_schema"
    assert "JSON Schema" in err["message"]


# --- YAML text -------------------------------------------------------------------------------


def test_yaml_syntax_error_names_line_and_column() -> None:
    text = "schema_version: 1\nid: com.example.x\nname: [unclosed\nversion: 1.0.0\n"
    with pytest.raises(ManifestError) as info:
        load_manifest_text(text)
    [err] = info.value.details
    assert err["path"].startswith("line 4, column ")
    assert err["message"]


def test_yaml_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest_text("- just\n- a list\n")
    assert info.value.details[0]["path"] == "(root)"


def test_yaml_text_errors_use_the_same_paths() -> None:
    text = (
        "schema_version: 1\nid: com.example.x\nname: X\nversion: 1.0.0\n"
        "runtime: {base: python, entrypoint: m:plugin}\n"
        "extensions:\n  - {point: analyzer, name: a}\n  - {point: nowhere, name: b}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest_text(text)
    assert [d["path"] for d in info.value.details] == ["extensions[1].point"]


# --- YAML text: what a manifest may not use ---------------------------------------------------

MINIMAL_YAML = (
    "schema_version: 1\nid: com.example.x\nname: X\nversion: 1.0.0\n"
    "runtime: {base: python, entrypoint: m:plugin}\n"
)


@pytest.fixture(params=["libyaml", "python"])
def yaml_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both parsers the strict reader runs on: libyaml when installed, PyYAML's own if not."""
    from summit_sdk import manifest_yaml

    if request.param == "python":
        monkeypatch.setattr(manifest_yaml, "_Loader", manifest_yaml._StrictPyLoader)
    elif not hasattr(manifest_yaml, "_StrictCLoader"):
        pytest.skip("PyYAML is built without libyaml here")
    return str(request.param)


def refusal(text: str | bytes) -> tuple[str, dict[str, str]]:
    with pytest.raises(ManifestError) as info:
        load_manifest_text(text)
    assert info.value.status_code == 422 and info.value.code == "invalid_manifest"
    [detail] = info.value.details
    return info.value.message, detail


@pytest.mark.parametrize(
    ("text", "where", "word"),
    [
        ("config_schema: &schema {type: object}\n", "line 6, column 16", "anchor &schema"),
        ("config_schema: {type: object, title: *name}\n", "line 6, column 38", "alias *name"),
        ("x-base: &b {type: object}\nconfig_schema:\n  <<: *b\n", "line 6, column 9", "&b"),
        ("config_schema: {type: object}\n? *key\n: value\n", "line 7, column 3", "alias *key"),
    ],
    ids=["anchor", "alias", "merge-key", "alias-as-key"],
)
def test_yaml_anchors_and_aliases_are_refused_with_their_line(
    yaml_backend: str, text: str, where: str, word: str
) -> None:
    message, detail = refusal(MINIMAL_YAML + text)
    assert "anchors or aliases" in message or "aliases" in message or "anchors" in message
    assert detail["path"] == where
    assert word in detail["message"] and "not allowed" in detail["message"]


def test_yaml_alias_bomb_is_refused_before_anything_expands(yaml_backend: str) -> None:
    from tests.fixtures.hostile_bundles import alias_bomb

    # Nine levels of nine: 387 million strings once expanded, from 1 kB of text.
    text = alias_bomb(MINIMAL_YAML.encode(), levels=9)
    assert len(text) < 1500
    _, detail = refusal(text)
    assert detail["path"] == "line 8, column 9"  # the first anchor, &l0


def test_a_merge_key_without_an_alias_is_still_plain_data(yaml_backend: str) -> None:
    m = load_manifest_text(MINIMAL_YAML + "config_schema:\n  <<: {type: object}\n")
    assert m.config_schema == {"type": "object"}


def nested(depth: int) -> str:
    """``config_schema`` holding mappings ``depth`` levels deep, counting the root mapping."""
    inner = "{type: object}"
    for _ in range(depth - 3):
        inner = "{x: " + inner + "}"
    return MINIMAL_YAML + f"config_schema: {{type: object, x-deep: {inner}}}\n"


def test_yaml_nesting_up_to_the_cap_is_accepted(yaml_backend: str) -> None:
    from summit_sdk.manifest_yaml import MAX_DEPTH, load_manifest_yaml

    data = load_manifest_yaml(nested(MAX_DEPTH))
    level, node = 0, data
    while isinstance(node, dict):
        level += 1
        node = node.get("config_schema") or node.get("x-deep") or node.get("x")
    assert level == MAX_DEPTH


@pytest.mark.parametrize("text", [nested(65), "[" * 50_000 + "]" * 50_000], ids=["65", "50000"])
def test_yaml_nested_deeper_than_the_cap_is_refused(yaml_backend: str, text: str) -> None:
    message, detail = refusal(text)
    assert detail["path"].startswith("line 1, ") or detail["path"].startswith("line 6, ")
    assert "levels" in message or "nesting" in detail["message"]


def test_manifest_over_256_kib_is_refused_before_parsing() -> None:
    from summit_sdk.manifest_yaml import MAX_BYTES

    assert MAX_BYTES == 256 * 1024
    fits = MINIMAL_YAML + "#" * (MAX_BYTES - len(MINIMAL_YAML) - 1) + "\n"
    assert len(fits) == MAX_BYTES
    assert load_manifest_text(fits).id == "com.example.x"
    message, detail = refusal(fits + "#")
    assert message == "plugin.yaml is larger than 256 KiB"
    assert detail == {
        "path": "(root)",
        "message": f"{MAX_BYTES + 1} bytes; a manifest may have at most {MAX_BYTES}",
    }
    # Counted in bytes, not characters.
    refusal(MINIMAL_YAML + "description: " + "é" * (MAX_BYTES // 2) + "\n")


def test_manifest_with_too_many_values_is_refused(yaml_backend: str) -> None:
    from summit_sdk.manifest_yaml import MAX_NODES

    # 40 kB naming 20 000 values; the 20 001st is refused where it stands.
    text = MINIMAL_YAML + "config_schema: {type: object, enum: [" + "1," * MAX_NODES + "1]}\n"
    message, detail = refusal(text)
    assert message == f"plugin.yaml has more than {MAX_NODES} values"
    assert detail["path"].startswith("line 6, column ")
    fits = MINIMAL_YAML + "config_schema: {type: object, enum: [" + "1," * 19_000 + "1]}\n"
    assert len(load_manifest_text(fits).config_schema["enum"]) == 19_001  # type: ignore[index]


@pytest.mark.parametrize(
    "value", ["1" * 5000, "2024-13-45", "!!binary 'not base64!'"], ids=["int", "date", "binary"]
)
def test_values_python_cannot_build_are_refused_not_crashed_on(value: str) -> None:
    _, detail = refusal(MINIMAL_YAML + f"description: {value}\n")
    assert detail["message"]


def test_the_sdk_reads_plugin_yaml_with_the_same_rules(tmp_path: Path) -> None:
    from summit_sdk.cli.manifest import ManifestError as SdkManifestError
    from summit_sdk.cli.manifest import load_manifest

    (tmp_path / "plugin.yaml").write_text(MINIMAL_YAML + "config_schema: &s {type: object}\n")
    with pytest.raises(SdkManifestError, match=r"line 6, column 16: anchor &s"):
        load_manifest(tmp_path)


def test_image_labels_are_held_to_the_same_caps() -> None:
    import json

    from summit_sdk.cli.manifest import ManifestError as SdkManifestError
    from summit_sdk.cli.manifest import manifest_from_label

    deep: dict[str, Any] = {}
    node = deep
    for _ in range(70):
        node["x"] = {}
        node = node["x"]
    label = json.dumps({**minimal(), "config_schema": {"type": "object", "x-deep": deep}})
    with pytest.raises(ManifestError, match="nested more than 64 levels"):
        load_manifest_text(label)
    with pytest.raises(SdkManifestError, match="nested more than 64 levels"):
        manifest_from_label({"io.summit.plugin": label}, "example/deep:1")
    big = json.dumps({**minimal(), "description": "x" * (256 * 1024)})
    with pytest.raises(SdkManifestError, match="larger than 256 KiB"):
        manifest_from_label({"io.summit.plugin": big}, "example/big:1")
