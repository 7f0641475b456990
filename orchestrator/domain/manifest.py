"""The plugin manifest (``plugin.yaml``): its model and a validator that reports every error.

Validation answers with *all* problems at once, each with the dotted path of the field, so
an author fixes a manifest in one round trip instead of one error per try.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from summit_sdk.manifest_yaml import ManifestTextError, load_manifest_yaml

from orchestrator import __version__
from orchestrator.domain.errors import InvalidInput
from orchestrator.domain.versions import Version, VersionError, VersionRange

PLUGIN_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
EVENT_TYPE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_*-]+)*$")
ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
HOST_PATTERN = re.compile(r"^(\*\.)?([a-z0-9-]+\.)*[a-z0-9-]+$")


class ExtensionPoint(StrEnum):
    DATA_SOURCE = "data_source"
    ANALYZER = "analyzer"
    VISUALIZATION = "visualization"
    EXPORT = "export"
    AUTH_PROVIDER = "auth_provider"
    WORKFLOW = "workflow"


class Permission(StrEnum):
    READ_DATA = "read:data"
    WRITE_DATA = "write:data"
    NETWORK_ACCESS = "network:access"
    STORAGE = "storage"
    EVENTS_PUBLISH = "events:publish"
    EVENTS_SUBSCRIBE = "events:subscribe"
    SECRETS_READ = "secrets:read"
    PLUGINS_INVOKE = "plugins:invoke"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Schemas already found valid, by their canonical JSON text. Checking a schema against the
# meta-schema costs about 0.7 ms, and a manifest is validated again each time it is read back
# from the database (on every host API call, for one), while its schemas rarely change.
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


class Runtime(_Strict):
    base: Literal["python"] | None = None
    entrypoint: str | None = None
    image: str | None = None

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, v: str | None) -> str | None:
        if v is not None and not ENTRYPOINT.fullmatch(v):
            raise ValueError("must look like 'module:object'")
        return v


class Dependency(_Strict):
    id: str
    version: str = "*"
    optional: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not PLUGIN_ID.fullmatch(v):
            raise ValueError("must be a reverse-DNS id such as com.example.tokenizer")
        return v

    @field_validator("version")
    @classmethod
    def _range(cls, v: str) -> str:
        try:
            VersionRange.parse(v)
        except VersionError as exc:
            raise ValueError(str(exc)) from None
        return v


class Extension(_Strict):
    point: ExtensionPoint
    name: str
    priority: int = Field(100, ge=0, le=10000)
    idempotent: bool = False
    timeout_ms: int | None = Field(None, ge=1, le=600_000)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SLUG.fullmatch(v):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 63)")
        return v

    _schemas = field_validator("input_schema", "output_schema")(_check_json_schema)


class Network(_Strict):
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for host in v:
            if not HOST_PATTERN.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name or '*.domain' pattern")
        return v


class Events(_Strict):
    subscribe: list[str] = Field(default_factory=list)
    publish: list[str] = Field(default_factory=list)

    @field_validator("subscribe", "publish")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        for t in v:
            if not EVENT_TYPE.fullmatch(t):
                raise ValueError(f"{t!r} is not a dotted event type")
        return v


class Resources(_Strict):
    memory_mb: Annotated[int, Field(ge=16, le=65536)] = 256
    cpu_percent: Annotated[int, Field(ge=1, le=1600)] = 50
    storage_mb: Annotated[int, Field(ge=0, le=1_048_576)] = 100
    network_mbps: Annotated[int, Field(ge=0, le=100_000)] = 10
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 30000


class Manifest(_Strict):
    schema_version: Literal[1]
    id: str = Field(max_length=128)
    name: str = Field(min_length=1, max_length=100)
    version: str
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

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not PLUGIN_ID.fullmatch(v):
            raise ValueError("must be a reverse-DNS id such as com.example.word-count")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        try:
            Version.parse(v)
        except VersionError as exc:
            raise ValueError(str(exc)) from None
        return v

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


def _cross_field_errors(data: dict[str, Any]) -> list[dict[str, str]]:
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
        if product == "summit" and not rng.admits(__version__):
            add("compatibility.summit", f"this orchestrator is {__version__}, outside {text!r}")
    seen: set[tuple[Any, Any]] = set()
    for i, ext in enumerate(_items(data.get("extensions"))):
        if isinstance(ext, dict) and isinstance(ext.get("point"), str):
            key = (ext.get("point"), ext.get("name"))
            if key in seen:
                add(f"extensions[{i}]", f"duplicate extension {key[0]}/{key[1]}")
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


class ManifestError(InvalidInput):
    code = "invalid_manifest"


def parse_manifest(data: Any) -> Manifest:
    """Validate a manifest mapping; raise ManifestError listing every problem with its path."""
    if not isinstance(data, dict):
        raise ManifestError(
            "the manifest must be a mapping",
            details=[{"path": "(root)", "message": f"got {type(data).__name__}"}],
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
    errors += _cross_field_errors(data)
    if errors or manifest is None:
        raise ManifestError(f"the manifest has {len(errors)} error(s)", details=errors)
    return manifest


def load_manifest_text(text: str | bytes) -> Manifest:
    """Parse YAML (or JSON, which is YAML) text into a validated manifest.

    The SDK's strict reader refuses anchors and aliases, more than 256 KiB and more than 64
    levels of nesting, so no manifest holds the process for more than a fraction of a second.
    """
    try:
        data = load_manifest_yaml(text)
    except ManifestTextError as exc:
        raise ManifestError(
            f"plugin.yaml {exc.headline}",
            details=[{"path": exc.where, "message": exc.problem}],
        ) from None
    return parse_manifest(data)
