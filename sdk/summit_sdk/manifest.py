"""The plugin manifest (``plugin.yaml``): its model and the one set of checks.

The orchestrator validates a manifest at install with these checks, and ``summit-plugin``
before a build, so an author meets every rule before an upload. Validation answers with *all*
problems at once, each with the dotted path of its field (``extensions[1].point``), so an
author fixes a manifest in one round trip instead of one error per try.

Needs pydantic, PyYAML and jsonschema (the SDK's ``manifest`` extra, part of ``cli``), never
Typer or the orchestrator. The orchestrator names it ``orchestrator.domain.manifest``, where
a refused manifest becomes its 422 ``invalid_manifest`` error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from summit_sdk.manifest_yaml import ManifestTextError, load_manifest_yaml
from summit_sdk.spec import ExtensionPoint
from summit_sdk.versions import Version, VersionError, VersionRange

__all__ = [
    "Dependency",
    "Events",
    "Extension",
    "ExtensionPoint",
    "InvalidManifest",
    "Manifest",
    "Network",
    "Permission",
    "Resources",
    "Runtime",
    "load_manifest_text",
    "manifest_problems",
    "parse_manifest",
    "schema_key",
]

PLUGIN_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
EVENT_TYPE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_*-]+)*$")
ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
HOST_PATTERN = re.compile(r"^(\*\.)?([a-z0-9-]+\.)*[a-z0-9-]+$")


class Permission(StrEnum):
    READ_DATA = "read:data"
    WRITE_DATA = "write:data"
    NETWORK_ACCESS = "network:access"
    STORAGE = "storage"
    EVENTS_PUBLISH = "events:publish"
    EVENTS_SUBSCRIBE = "events:subscribe"
    SECRETS_READ = "secrets:read"
    PLUGINS_INVOKE = "plugins:invoke"


class InvalidManifest(ValueError):
    """A refused manifest: ``message`` says so in one sentence, ``errors`` lists every problem
    as ``{"path": ..., "message": ...}``."""

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        self.message = message
        self.errors = errors
        listed = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        super().__init__(f"{message}: {listed}" if listed else message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Schemas already found valid, by their canonical JSON text. Checking a schema against the
# meta-schema costs about 0.7 ms, and the orchestrator validates a manifest again each time it
# reads one back from its database (on every host API call, for one), while its schemas
# rarely change.
_VALID_SCHEMAS: set[str] = set()
_VALID_SCHEMAS_MAX = 4096


def schema_key(schema: Any) -> str | None:
    """The canonical JSON text of a schema, to recognise the same schema again; None when it
    holds anything but plain JSON (a YAML date, say), which must not pass for its text."""
    try:
        return json.dumps(schema, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _check_json_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    key = schema_key(value)  # None: checked every time
    if key is not None and key in _VALID_SCHEMAS:
        return value
    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(
            f"not a valid JSON Schema: {exc.message}" + (f" at {where}" if where else "")
        ) from None
    if key is not None:
        if len(_VALID_SCHEMAS) >= _VALID_SCHEMAS_MAX:
            _VALID_SCHEMAS.clear()
        _VALID_SCHEMAS.add(key)
    return value


def _matching(pattern: re.Pattern[str], value: str, message: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(message)
    return value


def _pattern(pattern: re.Pattern[str], message: str) -> AfterValidator:
    """A string field that must match ``pattern`` in full."""
    return AfterValidator(lambda value: _matching(pattern, value, message))


def _each(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """A list of strings that must each match ``pattern``; the error names the first that
    does not, as ``'x' is not <what>``."""

    def check(values: list[str]) -> list[str]:
        for value in values:
            _matching(pattern, value, f"{value!r} is not {what}")
        return values

    return AfterValidator(check)


def _parsed_by(parse: Callable[[str], object]) -> AfterValidator:
    """A string field that ``parse`` (a version or a range) must read."""

    def check(value: str) -> str:
        try:
            parse(value)
        except VersionError as exc:
            raise ValueError(str(exc)) from None
        return value

    return AfterValidator(check)


def _plugin_id(example: str) -> AfterValidator:
    return _pattern(PLUGIN_ID, f"must be a reverse-DNS id such as {example}")


class Runtime(_Strict):
    base: Literal["python"] | None = None
    entrypoint: Annotated[str, _pattern(ENTRYPOINT, "must look like 'module:object'")] | None = None
    image: str | None = None


class Dependency(_Strict):
    id: Annotated[str, _plugin_id("com.example.tokenizer")]
    version: Annotated[str, _parsed_by(VersionRange.parse)] = "*"
    optional: bool = False


class Extension(_Strict):
    point: ExtensionPoint
    name: Annotated[
        str, _pattern(SLUG, "must be lowercase letters, digits, '-' or '_' (at most 63)")
    ]
    priority: int = Field(100, ge=0, le=10000)
    idempotent: bool = False
    timeout_ms: int | None = Field(None, ge=1, le=600_000)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None

    _schemas = field_validator("input_schema", "output_schema")(_check_json_schema)


class Network(_Strict):
    allowed_hosts: Annotated[
        list[str], _each(HOST_PATTERN, "a host name or '*.domain' pattern")
    ] = Field(default_factory=list)


EventTypes = Annotated[list[str], _each(EVENT_TYPE, "a dotted event type")]


class Events(_Strict):
    subscribe: EventTypes = Field(default_factory=list)
    publish: EventTypes = Field(default_factory=list)


class Resources(_Strict):
    memory_mb: Annotated[int, Field(ge=16, le=65536)] = 256
    cpu_percent: Annotated[int, Field(ge=1, le=1600)] = 50
    storage_mb: Annotated[int, Field(ge=0, le=1_048_576)] = 100
    network_mbps: Annotated[int, Field(ge=0, le=100_000)] = 10
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 30000


class Manifest(_Strict):
    schema_version: Literal[1]
    id: Annotated[str, Field(max_length=128), _plugin_id("com.example.word-count")]
    name: str = Field(min_length=1, max_length=100)
    version: Annotated[str, _parsed_by(Version.parse)]
    description: str = ""
    authors: list[str] = Field(default_factory=list)
    license: str | None = None
    homepage: str | None = None
    runtime: Runtime
    compatibility: dict[str, str] = Field(default_factory=dict)
    dependencies: list[Dependency] = Field(default_factory=list)
    extensions: list[Extension] = Field(default_factory=list)
    permissions: list[Permission] = Field(default_factory=list)
    network: Network = Field(default_factory=Network)
    events: Events = Field(default_factory=Events)
    resources: Resources = Field(default_factory=Resources)
    config_schema: dict[str, Any] | None = None

    _config = field_validator("config_schema")(_check_json_schema)

    @property
    def semver(self) -> Version:
        return Version.parse(self.version)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _cross_field_errors(data: dict[str, Any], summit_version: str | None) -> list[dict[str, str]]:
    """Rules between fields, read from the raw mapping so they are reported alongside field
    errors (a typo in ``version`` must not hide a missing permission)."""
    errors: list[dict[str, str]] = []

    def add(path: str, message: str) -> None:
        errors.append({"path": path, "message": message})

    rt = _section(data, "runtime")
    if "runtime" in data and isinstance(data["runtime"], dict):
        if rt.get("image") and (rt.get("base") or rt.get("entrypoint")):
            add("runtime", "give either 'image' or 'base' with 'entrypoint', not both")
        elif not rt.get("image") and not (rt.get("base") and rt.get("entrypoint")):
            add(
                "runtime", "needs 'base' and 'entrypoint' (built from source) or 'image' (prebuilt)"
            )
    for product, text in _section(data, "compatibility").items():
        if not isinstance(text, str):
            continue  # the field validator reports the type
        try:
            rng = VersionRange.parse(text)
        except VersionError as exc:
            add(f"compatibility.{product}", str(exc))
            continue
        if product == "summit" and summit_version and not rng.admits(summit_version):
            add("compatibility.summit", f"this orchestrator is {summit_version}, outside {text!r}")
    seen: set[tuple[Any, Any]] = set()
    for i, ext in enumerate(_items(data.get("extensions"))):
        if isinstance(ext, dict) and isinstance(ext.get("point"), str):
            key = (ext.get("point"), ext.get("name"))
            if key in seen:
                add(f"extensions[{i}]", f"{key[0]}/{key[1]} is declared twice")
            seen.add(key)
    perms = [p for p in _items(data.get("permissions")) if isinstance(p, str)]
    if len(set(perms)) != len(perms):
        add("permissions", "lists a permission twice")
    dep_ids: list[Any] = []
    for i, dep in enumerate(_items(data.get("dependencies"))):
        dep_id = dep.get("id") if isinstance(dep, dict) else None
        if dep_id is not None and dep_id == data.get("id"):
            add(f"dependencies[{i}].id", "a plugin cannot depend on itself")
        elif dep_id is not None and dep_id in dep_ids:
            add(f"dependencies[{i}].id", f"{dep_id} is listed twice")
        dep_ids.append(dep_id)
    if _items(_section(data, "network").get("allowed_hosts")) and (
        Permission.NETWORK_ACCESS.value not in perms
    ):
        add("network.allowed_hosts", "needs the 'network:access' permission")
    events = _section(data, "events")
    if _items(events.get("publish")) and Permission.EVENTS_PUBLISH.value not in perms:
        add("events.publish", "needs the 'events:publish' permission")
    if _items(events.get("subscribe")) and Permission.EVENTS_SUBSCRIBE.value not in perms:
        add("events.subscribe", "needs the 'events:subscribe' permission")
    return errors


def parse_manifest(data: Any, *, summit_version: str | None = None) -> Manifest:
    """Validate a manifest mapping; :class:`InvalidManifest` lists every problem with its path.

    ``summit_version`` is the orchestrator's own version, which ``compatibility.summit`` must
    admit; without it (an author's machine knows no orchestrator) the range is only parsed.
    """
    if not isinstance(data, dict):
        raise InvalidManifest(
            "the manifest must be a mapping",
            [{"path": "(root)", "message": f"must be a mapping, got {type(data).__name__}"}],
        )
    errors: list[dict[str, str]] = []
    manifest = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"path": _loc(e["loc"]), "message": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors()
        ]
    errors += _cross_field_errors(data, summit_version)
    if errors or manifest is None:
        raise InvalidManifest(f"the manifest has {len(errors)} error(s)", errors)
    return manifest


def manifest_problems(data: Any, *, summit_version: str | None = None) -> list[dict[str, str]]:
    """Every problem :func:`parse_manifest` finds in ``data``; empty when it is a manifest."""
    try:
        parse_manifest(data, summit_version=summit_version)
    except InvalidManifest as exc:
        return exc.errors
    return []


def load_manifest_text(text: str | bytes, *, summit_version: str | None = None) -> Manifest:
    """Parse YAML (or JSON, which is YAML) text into a validated manifest.

    The strict reader (:mod:`summit_sdk.manifest_yaml`) refuses anchors and aliases, more than
    256 KiB and more than 64 levels of nesting, so no manifest holds a process for more than a
    fraction of a second.
    """
    try:
        data = load_manifest_yaml(text)
    except ManifestTextError as exc:
        raise InvalidManifest(
            f"plugin.yaml {exc.headline}", [{"path": exc.where, "message": exc.problem}]
        ) from None
    return parse_manifest(data, summit_version=summit_version)
