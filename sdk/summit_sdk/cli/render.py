"""What ``summit-plugin`` prints: its two consoles, the progress of builds and pushes, the
conformance report and the instructions of ``run``.

Results go to ``out`` (stdout); progress, warnings and errors to ``err`` (stderr), so a
command's output can be piped.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def build_progress() -> Iterator[Callable[[str], None]]:
    """A spinner on stderr naming the build step; yields the callback for the build's lines."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[step]}[/bold] {task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", step="build", total=None)

        def show(line: str) -> None:
            if line.startswith("Step "):
                step, _, rest = line.partition(" : ")
                progress.update(task, step=step, description=rest[:100])
                short = line if len(line) <= 120 else line[:117] + "..."
                progress.console.print(short, style="dim", markup=False, highlight=False)
            else:
                progress.update(task, description=line[:100])

        yield show


@contextlib.contextmanager
def push_progress(tag: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A bar per layer on stderr; yields the callback for the registry's progress chunks."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=err,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def show(chunk: dict[str, Any]) -> None:
            layer = chunk.get("id")
            status = str(chunk.get("status") or "")
            if not layer or layer == tag:
                return
            detail = chunk.get("progressDetail") or {}
            if layer not in tasks:
                tasks[layer] = progress.add_task(f"{layer} {status}", total=None)
            progress.update(
                tasks[layer],
                description=f"{layer} {status}",
                completed=detail.get("current") or 0,
                total=detail.get("total") or None,
            )

        yield show


def conformance_report(report: Any, image: str) -> None:
    """The checks of ``verify`` as a table, then the host calls seen and the verdict."""
    table = Table(title=f"summit.plugin/v1 conformance: {image}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in report.checks:
        mark = "[green]pass[/green]" if check.ok else "[red]FAIL[/red]"
        table.add_row(check.name, mark, check.detail)
    out.print(table)
    if report.host_calls:
        out.print(f"host API calls: {', '.join(report.host_calls)}")
    failed = [c.name for c in report.checks if not c.ok]
    if failed:
        out.print(f"[red]failed:[/red] {', '.join(failed)}")
    else:
        out.print(f"[green]all {len(report.checks)} checks passed[/green]")


def sandbox_instructions(manifest: dict[str, Any], sock: str, seconds: float) -> None:
    """How to call a plugin that ``run`` started: its socket and a curl line per extension."""
    from summit_sdk.cli.samples import SchemaSampleError, sample_from_schema

    out.print(f"{manifest['id']} {manifest['version']} healthy after {seconds * 1000:.0f} ms")
    out.print(f"socket {sock}")
    out.print(f"curl --unix-socket {sock} http://plugin/summit/v1/health")
    for ext in manifest.get("extensions") or []:
        try:
            sample = sample_from_schema(ext.get("input_schema") or {"type": "object"})
        except SchemaSampleError:
            sample = {}
        body = json.dumps({"input": sample, "context": {"request_id": "r1"}})
        out.print(
            f"curl --unix-socket {sock} -H 'content-type: application/json' "
            f"-d {shlex.quote(body)} "
            f"http://plugin/summit/v1/extensions/{ext['point']}/{ext['name']}"
        )
