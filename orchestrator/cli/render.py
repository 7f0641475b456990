"""What ``summit`` prints: consoles, plugin lines, tables, JSON and the waiting spinner.

Commands decide what to show; this module decides how it looks. Text that comes from the
orchestrator is wrapped in :class:`rich.text.Text` (or printed with ``typer.echo``) so a plugin's
log line or state reason is never read as Rich markup.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

REASON_WIDTH = 48

_STATE_STYLES = {
    "ACTIVE": "green",
    "LOADED": "cyan",
    "INITIALIZING": "yellow",
    "UNLOADING": "yellow",
    "FAILED": "bold red",
}


def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def shorten(text: str | None, width: int = REASON_WIDTH) -> str:
    if not text:
        return ""
    flat = one_line(text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def state(name: str) -> Text:
    return Text(name, style=_STATE_STYLES.get(name, ""))


def plugin_line(plugin: dict[str, Any], verb: str) -> None:
    """``Enabled com.example.x 1.0.0 ACTIVE (reason)``."""
    line = Text(f"{verb} ")
    line.append(str(plugin.get("id", "?")), style="bold")
    line.append(f" {plugin.get('version', '')} ")
    line.append_text(state(str(plugin.get("state", ""))))
    if plugin.get("state_reason"):
        line.append(f" ({one_line(plugin['state_reason'])})", style="dim")
    stdout().print(line)


def with_spinner(
    label: str, call: Callable[[], Any], detail: Callable[[], str] = lambda: ""
) -> Any:
    """Run ``call`` in a worker thread while stderr shows a spinner with elapsed seconds.

    The worker is a daemon thread, so Ctrl-C leaves at once instead of waiting for the request.
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="summit-cli-request", daemon=True)
    started = time.monotonic()
    with stderr().status(f"{label} (0s)", spinner="dots") as status:
        worker.start()
        while worker.is_alive():
            worker.join(timeout=0.25)
            line = detail()
            shown = f": {escape(line[:100])}" if line else ""
            status.update(f"{label} ({int(time.monotonic() - started)}s){shown}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# --------------------------------------------------------------------------- plugins


def plugins_table(plugins: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", overflow="fold")
    table.add_column("VERSION", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("REASON")
    table.add_column("CONTAINER", no_wrap=True)
    for p in plugins:
        container = p.get("container") or {}
        table.add_row(
            Text(str(p.get("id", ""))),
            Text(str(p.get("version", ""))),
            state(str(p.get("state", ""))),
            Text(shorten(p.get("state_reason"))),
            Text(str(container.get("id") or "")[:12]),
        )
    return table


def plugin_details(plugin: dict[str, Any]) -> Table:
    """Two columns: state, permissions, extensions, resources, container."""
    manifest = plugin.get("manifest") or {}
    container = plugin.get("container") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")

    def row(key: str, value: Any) -> None:
        grid.add_row(key, value if isinstance(value, Text) else Text(str(value)))

    row("id", plugin.get("id", ""))
    if manifest.get("name"):
        row("name", manifest["name"])
    version = str(plugin.get("version", ""))
    if plugin.get("pending_version"):
        version += f" (pending {plugin['pending_version']})"
    row("version", version)
    row("state", state(str(plugin.get("state", ""))))
    if plugin.get("state_reason"):
        row("reason", one_line(plugin["state_reason"]))
    if manifest.get("description"):
        row("description", manifest["description"])
    row("permissions", ", ".join(plugin.get("granted_permissions") or []) or "-")
    exts = manifest.get("extensions") or []
    row(
        "extensions",
        ", ".join(f"{e.get('point')}/{e.get('name')}" for e in exts if isinstance(e, dict)) or "-",
    )
    deps = manifest.get("dependencies") or []
    if deps:
        row(
            "dependencies",
            ", ".join(f"{d.get('id')} {d.get('version', '')}".strip() for d in deps),
        )
    resources = plugin.get("resources") or {}
    if resources:
        row("resources", ", ".join(f"{k}={v}" for k, v in resources.items()))
    row("container", str(container.get("id") or "-")[:12])
    if container.get("image"):
        row("image", container["image"])
    row("created", plugin.get("created_at", ""))
    row("updated", plugin.get("updated_at", ""))
    return grid


# --------------------------------------------------------------------------- security


def tokens_table(tokens: list[dict[str, Any]]) -> Table:
    table = Table("id", "name", "role", "created", "revoked", box=None)
    for t in tokens:
        table.add_row(t["id"], t["name"], t["role"], t["created_at"], t.get("revoked_at") or "")
    return table


def keys_table(keys: list[dict[str, Any]]) -> Table:
    table = Table("key id", "name", "added", "revoked", box=None)
    for k in keys:
        table.add_row(k["key_id"], k["name"], k["added_at"], k.get("revoked_at") or "")
    return table


def audit_table(records: list[dict[str, Any]]) -> Table:
    table = Table("at", "count", "actor", "action", "outcome", "permission", box=None)
    for r in records:
        table.add_row(
            r["at"],
            str(r.get("count", 1)),
            r["actor"],
            r["action"],
            r["outcome"],
            r.get("permission") or "",
        )
    return table


# --------------------------------------------------------------------------- webhooks


def webhooks_table(hooks: list[dict[str, Any]]) -> Table:
    table = Table("id", "status", "types", "url", "delivered", "pending", "dead", box=None)
    for h in hooks:
        counts = h["deliveries"]
        table.add_row(
            h["id"],
            h["status"],
            ",".join(h["types"]),
            h["url"],
            str(counts["delivered"]),
            str(counts["pending"]),
            str(counts["dead"]),
        )
    return table


def deliveries_table(deliveries: list[dict[str, Any]]) -> Table:
    table = Table("id", "event", "type", "status", "attempts", "code", "ms", "error", box=None)
    for d in deliveries:
        table.add_row(
            str(d["id"]),
            d["event_id"],
            d.get("event_type") or "",
            d["status"],
            str(d["attempts"]),
            str(d.get("last_status") or ""),
            str(d.get("latency_ms") or ""),
            d.get("last_error") or "",
        )
    return table
