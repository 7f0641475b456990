"""A form made from a plugin's ``config_schema`` (JSON Schema), and the config read back from
what was submitted.

Only the reading of form fields is the UI's own (a number field that holds no number, JSON
that does not parse). Whether the config is valid is decided by the API's own check,
:func:`orchestrator.services.install.validate_config`, whose messages are put beside the
fields they name. A property the form cannot draw as a simple input (an object, an array of
anything but strings, a union) is a JSON text area; a schema without properties is one JSON
text area for the whole config.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

from orchestrator.domain.errors import InvalidInput
from orchestrator.domain.manifest import Manifest
from orchestrator.services.install import validate_config

__all__ = ["ConfigForm", "FormField"]

PREFIX = "config."
WHOLE = "config"  # the field of a schema without properties
_REQUIRED = re.compile(r"^'(?P<name>.+)' is a required property$")
_PATH = re.compile(r"^config\[(?P<name>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]")


@dataclass
class FormField:
    name: str  # the property; the input's name is PREFIX + name
    label: str
    kind: str  # text, password, number, integer, checkbox, select, lines, json
    help: str = ""
    required: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)  # (value, label) of a select
    value: str = ""  # as the input shows it
    checked: bool = False
    minimum: Any = None
    maximum: Any = None
    error: str = ""

    @property
    def input_name(self) -> str:
        return WHOLE if self.name == "" else PREFIX + self.name


def _kind(prop: dict[str, Any]) -> str:
    kind = prop.get("type")
    if "enum" in prop and isinstance(prop["enum"], list) and prop["enum"]:
        return "select"
    if kind == "string":
        secret = prop.get("writeOnly") or prop.get("format") == "password"
        return "password" if secret else "text"
    if kind in ("number", "integer"):
        return str(kind)
    if kind == "boolean":
        return "checkbox"
    if kind == "array" and (prop.get("items") or {}).get("type") == "string":
        return "lines"
    return "json"


def _shown(kind: str, value: Any) -> str:
    """How a value (a default, or what was submitted and stored) appears in its input."""
    if value is None:
        return ""
    if kind == "lines" and isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if kind == "json":
        return json.dumps(value, indent=2)
    if kind == "select":
        return json.dumps(value)
    return str(value)


class ConfigForm:
    """The fields of ``manifest``'s config schema, filled with ``values`` (else defaults).
    Without a manifest (not known here), the config is one JSON field, checked when the
    install reads the plugin's own manifest.

    ``stored``: ``values`` is a plugin's stored config, being edited. A field then shows what
    is stored (not the schema's default for a key the config lacks: saving the form
    unchanged must not write defaults into it), and the stored keys that no field shows
    (a schema may allow more properties than it describes) are kept as they are: ``kept``.
    """

    def __init__(
        self,
        manifest: Manifest | None,
        values: dict[str, Any] | None = None,
        *,
        stored: bool = False,
    ) -> None:
        self.manifest = manifest
        schema = (manifest.config_schema if manifest is not None else None) or {}
        props = schema.get("properties") if isinstance(schema, dict) else None
        self.errors: list[str] = []  # errors that name no one field
        self.fields: list[FormField] = []
        self.kept: dict[str, Any] = {}
        values = values or {}
        if not isinstance(props, dict) or not props:
            self.fields.append(
                FormField(
                    name="",
                    label="Configuration (JSON object)",
                    kind="json",
                    help="No settings are described for this plugin; a JSON object given "
                    "here is passed to it as its config.",
                    value=json.dumps(values, indent=2) if values else "",
                )
            )
            return
        required = set(schema.get("required") or [])
        if stored:
            self.kept = {k: v for k, v in values.items() if k not in props}
        for name, prop in props.items():
            prop = prop if isinstance(prop, dict) else {}
            kind = _kind(prop)
            current = values.get(name) if stored else values.get(name, prop.get("default"))
            self.fields.append(
                FormField(
                    name=str(name),
                    label=str(prop.get("title") or name),
                    kind=kind,
                    help=str(prop.get("description") or ""),
                    required=name in required,
                    options=[(json.dumps(v), str(v)) for v in prop.get("enum", [])]
                    if kind == "select"
                    else [],
                    value="" if kind == "checkbox" else _shown(kind, current),
                    checked=bool(current) if kind == "checkbox" else False,
                    minimum=prop.get("minimum"),
                    maximum=prop.get("maximum"),
                )
            )

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or any(f.error for f in self.fields)

    def read(self, form: FormData) -> dict[str, Any]:
        """The config the submitted ``form`` holds, checked by the API's own validation; every
        problem is recorded on its field (or in ``errors``), and the fields keep what was
        typed so the form can be shown again."""
        config: dict[str, Any] = dict(self.kept)
        for f in self.fields:
            raw = form.get(f.input_name)
            text = raw if isinstance(raw, str) else ""
            f.value, f.error = text, ""
            if f.kind == "checkbox":
                f.checked = raw is not None
                config[f.name] = f.checked
                continue
            if text.strip() == "":
                continue  # left empty: absent (the schema says whether it may be)
            try:
                value = self._parse(f, text)
            except ValueError as exc:
                f.error = str(exc)
                continue
            if f.name == "":
                if not isinstance(value, dict):
                    f.error = "must be a JSON object"
                    continue
                config = value
            else:
                config[f.name] = value
        if self.manifest is not None:
            try:
                validate_config(self.manifest, config)
            except InvalidInput as exc:
                self.place(exc.details if isinstance(exc.details, list) else [])
        return config

    @staticmethod
    def _parse(f: FormField, text: str) -> Any:
        if f.kind in ("text", "password"):
            return text
        if f.kind == "integer":
            try:
                return int(text.strip())
            except ValueError:
                raise ValueError("must be a whole number") from None
        if f.kind == "number":
            try:
                number = float(text.strip())
            except ValueError:
                raise ValueError("must be a number") from None
            return int(number) if number.is_integer() and "." not in text else number
        if f.kind == "lines":
            return [line.strip() for line in text.splitlines() if line.strip()]
        try:
            return json.loads(text)  # json, and a select's option values
        except ValueError:
            raise ValueError("must be valid JSON") from None

    def place(self, details: list[Any]) -> None:
        by_name = {f.name: f for f in self.fields}
        for detail in details:
            path = str(detail.get("path", "")) if isinstance(detail, dict) else ""
            message = str(detail.get("message", "")) if isinstance(detail, dict) else str(detail)
            target = None
            matched = _PATH.match(path)
            if matched:
                try:  # the API writes the property as Python's repr of its name
                    target = by_name.get(str(ast.literal_eval(matched["name"])))
                except (ValueError, SyntaxError):
                    target = None
            elif (required := _REQUIRED.match(message)) is not None:
                target = by_name.get(required["name"])
                message = "is required"
            if target is None and "" in by_name:
                target = by_name[""]
            if target is not None and not target.error:
                target.error = message
            else:
                self.errors.append(f"{path}: {message}" if path else message)
