"""The plugin's folder: ``new`` (scaffold a project), ``manifest`` (write or check
``plugin.yaml`` from the code) and ``test`` (the code against ``plugin.yaml``, then pytest).

:func:`plugin_folder` and :func:`check_code` are also what ``build`` and ``dev`` check first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from summit_sdk.cli.errors import BAD_INPUT, CliError, fail, reported
from summit_sdk.cli.render import err, out
from summit_sdk.spec import EXTENSION_POINTS


def plugin_folder(directory: Path) -> dict[str, Any]:
    """The checked ``plugin.yaml`` of a plugin folder."""
    from summit_sdk.cli.manifest import load_manifest

    if not directory.is_dir():
        raise CliError(f"{directory} is not a folder", BAD_INPUT)
    return load_manifest(directory)


def check_code(directory: Path, manifest: dict[str, Any]) -> None:
    """Import the plugin as the runtime does and refuse a plugin.yaml that contradicts it."""
    from summit_sdk.cli import introspect

    entrypoint = (manifest.get("runtime") or {}).get("entrypoint")
    if not entrypoint:
        return  # a prebuilt image (runtime.image): no Python code to compare
    try:
        described = introspect.describe_folder(directory, entrypoint)
    except introspect.IntrospectionError as exc:
        raise CliError(
            f"{exc} (plugin.yaml is checked against the code, so the plugin's own requirements "
            "must be installed where summit-plugin runs; `build --no-check` skips the check)",
            BAD_INPUT,
        ) from None
    problems = introspect.compare(described, manifest)
    if problems:
        raise CliError(
            f"plugin.yaml does not match the code ({len(problems)} problem(s)): "
            + "; ".join(problems)
            + " (summit-plugin manifest --write updates plugin.yaml)",
            BAD_INPUT,
        )


def new(
    name: Annotated[str, typer.Argument(help="Plugin name, e.g. keyword-finder")],
    point: Annotated[
        str, typer.Option("--point", "-p", help=f"Extension point: {', '.join(EXTENSION_POINTS)}")
    ] = "analyzer",
    directory: Annotated[
        Path, typer.Option("--dir", "-d", help="Folder in which the project folder is created")
    ] = Path("."),
) -> None:
    """Create a ready plugin project: code, plugin.yaml, tests and README."""
    from summit_sdk.cli import scaffold

    with reported():
        try:
            scaffold.check_name(name)
            if point not in EXTENSION_POINTS:
                raise ValueError(
                    f"unknown extension point {point!r}; one of {', '.join(EXTENSION_POINTS)}"
                )
            target = directory / name
            files = scaffold.create(target, name, point)
        except (ValueError, FileExistsError) as exc:
            raise CliError(str(exc), BAD_INPUT) from None
        except OSError as exc:
            raise CliError(f"cannot write the project: {exc}", BAD_INPUT) from None
        out.print(f"created {point} plugin com.example.{name} in {target}")
        for path in files:
            out.print(f"  {path.relative_to(target)}")
        out.print(f"next: cd {target} && pytest && summit-plugin build .")


def manifest(
    directory: Annotated[Path, typer.Argument(help="Plugin folder")] = Path("."),
    entrypoint: Annotated[
        str | None,
        typer.Option("--entrypoint", "-e", help="module:object (default: plugin.yaml's)"),
    ] = None,
    write: Annotated[bool, typer.Option("--write", "-w", help="Write plugin.yaml")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only compare the code with plugin.yaml")
    ] = False,
) -> None:
    """Generate plugin.yaml from the plugin's code (the builder or decorators).

    What the code cannot know (resources, network, dependencies, authors) is kept from an
    existing plugin.yaml.
    """
    from summit_sdk.cli import introspect
    from summit_sdk.cli.manifest import check_manifest
    from summit_sdk.manifest_yaml import dump_manifest_yaml

    with reported():
        if not directory.is_dir():
            raise CliError(f"{directory} is not a folder", BAD_INPUT)
        path = directory / "plugin.yaml"
        base: dict[str, Any] | None = None
        if path.is_file():
            base = plugin_folder(directory)
        entry = entrypoint or ((base or {}).get("runtime") or {}).get("entrypoint")
        if check and base is not None and not entry:
            out.print(
                "plugin.yaml names no runtime.entrypoint (a prebuilt image): nothing to check"
            )
            return
        if not entry:
            raise CliError("no entrypoint: pass --entrypoint module:object", BAD_INPUT)
        if check:
            if base is None:
                raise CliError(f"{path} not found", BAD_INPUT)
            check_code(directory, base)
            out.print(f"plugin.yaml matches the code of {entry}")
            return
        generated = introspect.generate(introspect.describe_folder(directory, entry), base, entry)
        problems = check_manifest(generated)
        if problems:
            raise CliError("the generated manifest is incomplete: " + "; ".join(problems))
        text = dump_manifest_yaml(generated, sort_keys=False, allow_unicode=True)
        if write:
            path.write_text(text, encoding="utf-8")
            err.print(f"wrote {path}")
        else:
            sys.stdout.write(text)


def test(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Plugin folder")] = Path("."),
) -> None:
    """Check the code against plugin.yaml, then run the plugin's tests with pytest (no
    Docker needed). Extra arguments go to pytest."""
    import importlib.util
    import subprocess

    from summit_sdk.console import INSTALL_HINT

    with reported():
        check_code(directory, plugin_folder(directory))
    if importlib.util.find_spec("pytest") is None:
        fail(f"summit-plugin test runs pytest, which is not installed: {INSTALL_HINT}", BAD_INPUT)
    done = subprocess.run([sys.executable, "-m", "pytest", *ctx.args], cwd=directory, check=False)
    raise typer.Exit(done.returncode)
