"""``summit-plugin new``: a ready plugin project for one extension point."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from summit_sdk.manifest_yaml import dump_manifest_yaml
from summit_sdk.spec import EXTENSION_POINTS

NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Template:
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    handler: str  # body of `def handle(input, ctx)`, indented 4 spaces
    sample_input: Any
    assertion: str  # python expression on `output`


_STR = {"type": "string"}
TEMPLATES: dict[str, Template] = {
    "data_source": Template(
        "Returns records matching a query, a page at a time",
        {
            "type": "object",
            "required": ["query"],
            "properties": {
                "query": {"type": "string", "maxLength": 200},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                "cursor": {"type": ["string", "null"]},
            },
        },
        {
            "type": "object",
            "required": ["records", "next_cursor"],
            "properties": {
                "records": {"type": "array", "items": {"type": "object"}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "    rows = [{'id': i, 'title': f'{input[\"query\"]} #{i}'} for i in range(25)]\n"
        "    start = int(input.get('cursor') or 0)\n"
        "    limit = int(input.get('limit', ctx.config.get('page_size', 10)))\n"
        "    page = rows[start : start + limit]\n"
        "    more = start + limit < len(rows)\n"
        "    return {'records': page, 'next_cursor': str(start + limit) if more else None}\n",
        {"query": "report", "limit": 10},
        "len(output['records']) == 10 and output['next_cursor'] == '10'",
    ),
    "analyzer": Template(
        "Finds keywords in a text and scores them",
        {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string", "maxLength": 100000}},
        },
        {
            "type": "object",
            "required": ["findings"],
            "properties": {
                "findings": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["label", "score"],
                        "properties": {
                            "label": _STR,
                            "score": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    },
                }
            },
        },
        "    words = [w.strip('.,;:!?').lower() for w in input['text'].split()]\n"
        "    words = [w for w in words if len(w) >= ctx.config.get('min_length', 4)]\n"
        "    counts: dict[str, int] = {}\n"
        "    for word in words:\n"
        "        counts[word] = counts.get(word, 0) + 1\n"
        "    total = len(words) or 1\n"
        "    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]\n"
        "    return {'findings': [{'label': w, 'score': c / total} for w, c in ranked]}\n",
        {"text": "Summit plugins run in sandboxed containers; plugins talk JSON."},
        "output['findings'][0]['label'] == 'plugins'",
    ),
    "visualization": Template(
        "Draws labelled values as a Vega-Lite bar chart",
        {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["label", "value"],
                        "properties": {"label": _STR, "value": {"type": "number"}},
                    },
                },
                "title": _STR,
            },
        },
        {
            "type": "object",
            "required": ["format", "spec"],
            "properties": {"format": {"const": "vega-lite"}, "spec": {"type": "object"}},
        },
        "    spec = {\n"
        "        '$schema': 'https://vega.github.io/schema/vega-lite/v5.json',\n"
        "        'title': input.get('title', ctx.config.get('title', 'Chart')),\n"
        "        'data': {'values': input['data']},\n"
        "        'mark': 'bar',\n"
        "        'encoding': {\n"
        "            'x': {'field': 'label', 'type': 'nominal'},\n"
        "            'y': {'field': 'value', 'type': 'quantitative'},\n"
        "        },\n"
        "    }\n"
        "    return {'format': 'vega-lite', 'spec': spec}\n",
        {"data": [{"label": "a", "value": 3}]},
        "output['spec']['mark'] == 'bar'",
    ),
    "export": Template(
        "Exports records as CSV",
        {
            "type": "object",
            "required": ["records"],
            "properties": {"records": {"type": "array", "items": {"type": "object"}}},
        },
        {
            "type": "object",
            "required": ["content", "content_type", "filename"],
            "properties": {"content": _STR, "content_type": _STR, "filename": _STR},
        },
        "    records = input['records']\n"
        "    columns = sorted({key for record in records for key in record})\n"
        "    out = io.StringIO()\n"
        "    writer = csv.DictWriter(out, fieldnames=columns)\n"
        "    writer.writeheader()\n"
        "    writer.writerows(records)\n"
        "    name = ctx.config.get('filename', 'export.csv')\n"
        "    return {'content': out.getvalue(), 'content_type': 'text/csv', 'filename': name}\n",
        {"records": [{"a": 1, "b": 2}]},
        "output['content'].splitlines() == ['a,b', '1,2']",
    ),
    "auth_provider": Template(
        "Accepts callers that present a known API key",
        {"type": "object", "required": ["api_key"], "properties": {"api_key": _STR}},
        {
            "type": "object",
            "required": ["authenticated"],
            "properties": {
                "authenticated": {"type": "boolean"},
                "principal": {"type": ["string", "null"]},
            },
        },
        "    keys = ctx.config.get('keys', {})\n"
        "    given = input['api_key']\n"
        "    matches = [who for who, key in keys.items() if hmac.compare_digest(key, given)]\n"
        "    principal = matches[0] if matches else None\n"
        "    return {'authenticated': principal is not None, 'principal': principal}\n",
        {"api_key": "nope"},
        "output == {'authenticated': False, 'principal': None}",
    ),
    "workflow": Template(
        "Runs an action with parameters",
        {
            "type": "object",
            "required": ["action"],
            "properties": {
                "action": {"type": "string", "enum": ["echo", "count"]},
                "params": {"type": "object"},
            },
        },
        {
            "type": "object",
            "required": ["status", "result"],
            "properties": {"status": {"enum": ["done", "failed"]}, "result": {}},
        },
        "    params = input.get('params', {})\n"
        "    if input['action'] == 'count':\n"
        "        return {'status': 'done', 'result': len(params)}\n"
        "    return {'status': 'done', 'result': params}\n",
        {"action": "count", "params": {"a": 1}},
        "output == {'status': 'done', 'result': 1}",
    ),
}

_CONFIG = {
    "data_source": ("page_size", {"type": "integer", "minimum": 1, "default": 10}),
    "analyzer": ("min_length", {"type": "integer", "minimum": 1, "default": 4}),
    "visualization": ("title", {"type": "string", "default": "Chart"}),
    "export": ("filename", {"type": "string", "default": "export.csv"}),
    "auth_provider": (
        "keys",
        {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
    ),
    "workflow": ("dry_run", {"type": "boolean", "default": False}),
}
_IMPORTS = {"export": "import csv\nimport io\n", "auth_provider": "import hmac\n"}


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(
            f"invalid plugin name {name!r}: lowercase letters, digits and '-', starting with a "
            "letter (at most 63)"
        )
    return name


def module_name(name: str) -> str:
    return name.replace("-", "_")


def render(name: str, point: str) -> dict[str, str]:
    """Relative path -> file content of a new project."""
    if point not in EXTENSION_POINTS:
        raise ValueError(f"unknown extension point {point!r}; one of {', '.join(EXTENSION_POINTS)}")
    check_name(name)
    t = TEMPLATES[point]
    module = module_name(name)
    plugin_id = f"com.example.{name}"
    title = name.replace("-", " ").title()
    key, prop = _CONFIG[point]
    config_schema = {"type": "object", "properties": {key: prop}}
    manifest = {
        "schema_version": 1,
        "id": plugin_id,
        "name": title,
        "version": "0.1.0",
        "description": t.description,
        "authors": ["Example Ltd <dev@example.com>"],
        "license": "MIT",
        "runtime": {"base": "python", "entrypoint": f"{module}:plugin"},
        "compatibility": {"summit": ">=0.1,<1"},
        "extensions": [
            {
                "point": point,
                "name": name,
                "priority": 100,
                "input_schema": t.input_schema,
                "output_schema": t.output_schema,
            }
        ],
        "permissions": [],
        "resources": {"memory_mb": 128, "cpu_percent": 50, "timeout_ms": 5000},
        "config_schema": config_schema,
    }
    code = (
        f'"""{title}: a Summit {point} plugin. {t.description}."""\n\n'
        f"{_IMPORTS.get(point, '')}"
        "from typing import Any\n\n"
        "from summit_sdk import PluginContext, create_plugin\n\n\n"
        "def initialize(ctx: PluginContext) -> None:\n"
        "    ctx.logger.info('initialized with config %s', sorted(ctx.config))\n\n\n"
        "def handle(input: Any, ctx: PluginContext) -> dict[str, Any]:\n"
        f"{t.handler}\n\n"
        "plugin = (\n"
        "    create_plugin()\n"
        "    .with_metadata(\n"
        f"        id={plugin_id!r},\n"
        "        version='0.1.0',\n"
        f"        name={title!r},\n"
        f"        description={t.description!r},\n"
        "    )\n"
        f"    .with_config_schema({config_schema!r})\n"
        "    .on_initialize(initialize)\n"
        f"    .extension({point!r}, {name!r}, handle)\n"
        "    .build()\n"
        ")\n"
    )
    url = f"/summit/v1/extensions/{point}/{name}"
    test = (
        f'"""Tests of {title}, in-process (no Docker): run them with `pytest`."""\n\n'
        "import sys\n"
        "from collections.abc import Iterator\n"
        "from pathlib import Path\n\n"
        "import pytest\n"
        "from starlette.testclient import TestClient\n\n"
        "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))\n\n"
        "from summit_sdk.runtime import create_app  # noqa: E402\n\n"
        f"from {module} import plugin  # noqa: E402\n\n"
        f"URL = {url!r}\n\n\n"
        "@pytest.fixture\n"
        "def client() -> Iterator[TestClient]:\n"
        "    with TestClient(create_app(plugin)) as client:\n"
        "        response = client.post('/summit/v1/initialize', json={'config': {}})\n"
        "        assert response.status_code == 200, response.text\n"
        "        yield client\n\n\n"
        "def test_health_lists_the_extension(client: TestClient) -> None:\n"
        "    body = client.get('/summit/v1/health').json()\n"
        f"    assert body['plugin'] == {{'id': {plugin_id!r}, 'version': '0.1.0'}}\n"
        f"    assert body['extensions'] == [{{'point': {point!r}, 'name': {name!r}}}]\n\n\n"
        "def test_handles_a_sample_input(client: TestClient) -> None:\n"
        f"    payload = {{'input': {t.sample_input!r}, 'context': {{'request_id': 't1'}}}}\n"
        "    response = client.post(URL, json=payload)\n"
        "    assert response.status_code == 200, response.text\n"
        "    output = response.json()['output']\n"
        f"    assert {t.assertion}\n\n\n"
        "def test_unknown_extension_is_404(client: TestClient) -> None:\n"
        f"    response = client.post('/summit/v1/extensions/{point}/nope', json={{'input': {{}}, "
        "'context': {'request_id': 't2'}})\n"
        "    assert response.status_code == 404\n"
        "    assert response.json()['error']['code'] == 'unknown_extension'\n"
    )
    readme = (
        f"# {title}\n\n{t.description}. A Summit `{point}` plugin (`{plugin_id}`).\n\n"
        "```sh\n"
        "pytest                                    # handler tests, in-process\n"
        "summit-plugin build .                     # image from summit/plugin-python\n"
        f"summit-plugin verify summit-plugin/{plugin_id}:0.1.0   # conformance suite\n"
        f"summit-plugin run summit-plugin/{plugin_id}:0.1.0      # sandboxed, for manual calls\n"
        "summit-plugin keygen --out keys\n"
        f"summit-plugin sign summit-plugin/{plugin_id}:0.1.0 --key keys/summit-signing.key\n"
        f"summit-plugin push summit-plugin/{plugin_id}:0.1.0 127.0.0.1:5000/example/{name}:0.1.0\n"
        "```\n\n"
        f"Sample input:\n\n```json\n{json.dumps(t.sample_input, indent=2)}\n```\n"
    )
    return {
        f"{module}.py": code,
        "plugin.yaml": dump_manifest_yaml(manifest, sort_keys=False, width=100),
        f"tests/test_{module}.py": test,
        "README.md": readme,
        ".gitignore": "__pycache__/\n.pytest_cache/\nkeys/\n",
    }


def create(target: Path, name: str, point: str) -> list[Path]:
    files = render(name, point)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not empty")
    written = []
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
