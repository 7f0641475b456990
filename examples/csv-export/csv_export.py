"""CSV Export: rows as CSV or JSON files."""

import csv
import io
import json
from typing import Any

from summit_sdk import Export, PluginContext, PluginError, collect, export
from summit_sdk.points import ExportInput, ExportOutput

PLUGIN_ID = "com.example.csv-export"
PLUGIN_VERSION = "1.0.0"


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of every row, in first-seen order (rows may differ in their keys)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def to_csv(rows: list[dict[str, Any]], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(rows), delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        )
    return out.getvalue().encode("utf-8")


@export("csv")
class CsvExport(Export):
    def export(self, input: ExportInput, ctx: PluginContext) -> ExportOutput:
        delimiter = str(input.options.get("delimiter", ","))
        if len(delimiter) != 1:
            raise PluginError("options.delimiter must be one character", code="invalid_input")
        return ExportOutput(
            content=to_csv(input.data, delimiter),
            content_type="text/csv; charset=utf-8",
            filename=_filename(input, "csv"),
        )


@export("json")
class JsonExport(Export):
    def export(self, input: ExportInput, ctx: PluginContext) -> ExportOutput:
        indent = 2 if input.options.get("pretty") else None
        return ExportOutput(
            content=json.dumps(input.data, indent=indent, ensure_ascii=False).encode("utf-8"),
            content_type="application/json",
            filename=_filename(input, "json"),
        )


def _filename(input: ExportInput, extension: str) -> str:
    # Only a plain name, no directories: the caller may save it as is.
    base = (input.filename or "export").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "export"
    return f"{safe}.{extension}"


plugin = collect(__name__)
