"""The plugin's image on this machine: ``build`` it the way the orchestrator does, ``run`` it in
the orchestrator's sandbox, ``verify`` it against the ``summit.plugin/v1`` conformance suite.

:func:`docker_client` and :func:`local_image` are shared with the signing and publishing
commands; docker-py is imported only when a command needs it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from summit_sdk.cli import render
from summit_sdk.cli.errors import BAD_INPUT, FAILURE, CliError, reported
from summit_sdk.cli.project import check_code
from summit_sdk.cli.render import err, out


def docker_client() -> Any:
    from summit_sdk.cli import docker_ops

    return docker_ops.client()


def local_image(docker: Any, ref: str) -> Any:
    """The image ``ref`` on this Docker Engine (bad input when it is not there)."""
    import docker.errors as derr

    try:
        return docker.images.get(ref)
    except derr.ImageNotFound:
        raise CliError(f"image {ref} not found", BAD_INPUT) from None
    except derr.DockerException as exc:
        raise CliError(f"cannot inspect image {ref}: {exc}") from None


def build(
    directory: Annotated[
        Path, typer.Argument(help="Plugin folder (plugin.yaml at its root)")
    ] = Path("."),
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Default summit-plugin/<id>:<version>")
    ] = None,
    base: Annotated[str, typer.Option("--base", help="Base image")] = "summit/plugin-python:latest",
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Skip checking the code against plugin.yaml")
    ] = False,
) -> None:
    """Build the plugin image the way the orchestrator does (after checking the code
    against plugin.yaml)."""
    from summit_sdk.cli import docker_ops
    from summit_sdk.cli.manifest import load_manifest

    with reported():
        if not directory.is_dir():
            raise CliError(f"{directory} is not a folder", BAD_INPUT)
        manifest = load_manifest(directory)
        if not (manifest.get("runtime") or {}).get("entrypoint"):
            raise CliError("plugin.yaml: runtime.entrypoint is required to build", BAD_INPUT)
        if not no_check:
            check_code(directory, manifest)
        image_tag = tag or f"summit-plugin/{manifest['id']}:{manifest['version']}"
        docker = docker_client()
        with render.build_progress() as show:
            built = docker_ops.build_image(
                docker, directory, manifest, tag=image_tag, base=base, progress=show
            )
        out.print(f"built {built.tag}")
        out.print(f"image id {built.image_id}")


def run(
    image: Annotated[str, typer.Argument(help="Plugin image")],
) -> None:
    """Run the image in the sandbox; Ctrl-C stops and removes it."""
    from summit_sdk.cli import docker_ops
    from summit_sdk.cli.manifest import manifest_from_label

    with reported():
        docker = docker_client()
        manifest = manifest_from_label(local_image(docker, image).labels, image)
        box = docker_ops.start_sandboxed(docker, image, manifest, "run")
        # SIGTERM behaves like Ctrl-C so the container is always cleaned up.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            _, seconds = docker_ops.wait_healthy(box)
            render.sandbox_instructions(manifest, str(box.socket_path), seconds)
            err.print("logs follow; Ctrl-C stops and removes the container")
            for chunk in box.container.logs(stream=True, follow=True):
                sys.stderr.write(chunk.decode("utf-8", "replace"))
                sys.stderr.flush()
            state = box.state()
            raise CliError(f"the container exited with status {state.get('ExitCode')}")
        except KeyboardInterrupt:
            err.print("stopping")
            with contextlib.suppress(Exception):
                box.container.stop(timeout=5)
        finally:
            box.remove()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def verify(
    image: Annotated[str, typer.Argument(help="Plugin image (any language)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Run the summit.plugin/v1 conformance suite against an image."""
    from summit_sdk.cli import conformance

    with reported():
        docker = docker_client()
        local_image(docker, image)
        if as_json:
            report = conformance.run(docker, image)
            out.print_json(json.dumps(report.to_json()))
        else:
            with err.status(f"verifying {image}"):
                report = conformance.run(docker, image)
            render.conformance_report(report, image)
        if not report.passed:
            raise typer.Exit(FAILURE)
