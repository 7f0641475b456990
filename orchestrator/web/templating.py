"""The Jinja2 environment of the UI's pages: autoescaping on for every template (whatever its
name), undefined names an error rather than an empty string, and the few filters the pages
share. Every string a plugin or a publisher supplies goes through the autoescape; the only
markup not escaped is what :mod:`orchestrator.web.readme` writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi.templating import Jinja2Templates

from orchestrator import __version__
from orchestrator.web.assets import charts_ready
from orchestrator.web.readme import render_markdown
from orchestrator.web.wording import permission_words, point_words, state_words

__all__ = ["templates"]

TEMPLATES = Path(__file__).parent / "templates"


def when(value: Any) -> str:
    """A time as the pages show it: UTC to the second."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def size(value: Any) -> str:
    """Bytes as KiB, MiB, GiB."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, pretty_json=pretty_json, markdown=render_markdown, size=size, number=number
    )
    env.globals.update(
        permission_words=permission_words,
        point_words=point_words,
        state_words=state_words,
        summit_version=__version__,
        charts_ready=charts_ready,
    )
    return env


templates = Jinja2Templates(env=_environment())
