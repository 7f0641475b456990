"""Getting a plugin to where it runs: ``push`` (to a registry), ``publish`` (push, then install
into an orchestrator, or publish to its catalog) and ``dev`` (deploy a folder and hot-reload
it on every change).

The orchestrator is reached with :class:`summit_sdk.client.OrchestratorClient`, the same
client as the operator's ``summit`` command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from summit_sdk.cli import render
from summit_sdk.cli.errors import BAD_INPUT, CliError, describe, reported
from summit_sdk.cli.images import docker_client, local_image
from summit_sdk.cli.project import check_code, plugin_folder
from summit_sdk.cli.render import err, out
from summit_sdk.client import OrchestratorClient, OrchestratorError

# An install may build or pull for minutes; a wrong address should fail at once.
INSTALL_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 5.0

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Orchestrator (default $SUMMIT_URL or :8700)")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Admin token (default $SUMMIT_ADMIN_TOKEN)")
]
ApproveOption = Annotated[
    list[str] | None, typer.Option("--approve", help="Approve a permission (repeatable)")
]
ApproveAllOption = Annotated[
    bool, typer.Option("--approve-all", help="Approve every permission the plugin requests")
]
ConfigOption = Annotated[str, typer.Option("--config", help="Plugin config (JSON object)")]
ImageArgument = Annotated[str, typer.Argument(help="Local plugin image")]
RefArgument = Annotated[str, typer.Argument(help="Target, e.g. 127.0.0.1:5000/team/name:1.0.0")]


def _orchestrator(url: str | None, token: str | None) -> OrchestratorClient:
    from summit_sdk import __version__

    return OrchestratorClient(
        url,
        token,
        timeout_s=INSTALL_TIMEOUT_S,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        user_agent=f"summit-plugin/{__version__}",
    )


def _install_options(
    manifest: dict[str, Any], approve: list[str] | None, approve_all: bool, config: str
) -> tuple[list[str], dict[str, Any]]:
    try:
        parsed = json.loads(config)
    except ValueError as exc:
        raise CliError(f"--config is not JSON: {exc}", BAD_INPUT) from None
    if not isinstance(parsed, dict):
        raise CliError("--config must be a JSON object", BAD_INPUT)
    approved = list(manifest.get("permissions") or []) if approve_all else list(approve or [])
    return approved, parsed


def _push(image: str, ref: str) -> str | None:
    from summit_sdk.cli import docker_ops

    if "/" not in ref or ref.startswith("/"):
        raise CliError(f"REF must name a registry repository, got {ref!r}", BAD_INPUT)
    repo, tag = docker_ops.split_ref(ref)
    docker = docker_client()
    img = local_image(docker, image)
    if not img.tag(repo, tag=tag):
        raise CliError(f"cannot tag {image} as {ref}")
    with render.push_progress(tag) as show:
        digest = docker_ops.push_image(docker, f"{repo}:{tag}", show)
    out.print(f"pushed {repo}:{tag}" + (f" ({digest})" if digest else ""))
    return digest


def push(image: ImageArgument, ref: RefArgument) -> None:
    """Tag the image as REF and push it to its registry."""
    with reported():
        _push(image, ref)


def publish(
    image: ImageArgument,
    ref: RefArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    approve: ApproveOption = None,
    approve_all: ApproveAllOption = False,
    config: ConfigOption = "{}",
    enable: Annotated[bool, typer.Option("--enable", help="Enable it after install")] = False,
    catalog: Annotated[
        bool,
        typer.Option(
            "--catalog",
            help="Publish the pushed image (by digest) to the orchestrator's catalog instead "
            "of installing it (a publisher token, or the admin's)",
        ),
    ] = False,
    readme: Annotated[
        Path | None, typer.Option("--readme", help="Markdown file shown on its catalog page")
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option("--category", help="Catalog category (repeatable)")
    ] = None,
    keyword: Annotated[
        list[str] | None, typer.Option("--keyword", help="Search keyword (repeatable)")
    ] = None,
    changelog: Annotated[str, typer.Option("--changelog", help="What changed")] = "",
    signature: Annotated[
        Path | None,
        typer.Option("--signature", help="Signature file from `summit-plugin sign`"),
    ] = None,
) -> None:
    """Push the image to its registry, then install it into an orchestrator from there (or,
    with --catalog, publish it to the orchestrator's catalog)."""
    from summit_sdk.cli.manifest import manifest_from_label

    with reported():
        manifest = manifest_from_label(local_image(docker_client(), image).labels, image)
        approved, parsed = _install_options(manifest, approve, approve_all, config)
        entry = _catalog_entry(readme, category, keyword, changelog, signature) if catalog else None
        with _orchestrator(url, token) as remote:
            remote.check()
            digest = _push(image, ref)
            if entry is not None:
                if not digest:
                    raise CliError("the registry answered no digest; cannot publish by digest")
                pinned = f"{ref.rsplit(':', 1)[0] if ':' in ref.rsplit('/', 1)[-1] else ref}"
                entry["image"] = f"{pinned}@{digest}"
                published = remote.post(
                    f"/v1/catalog/plugins/{manifest['id']}/versions", json=entry
                )
                out.print(
                    f"published {published['plugin_id']} {published['version']} to the catalog "
                    f"({published['image']})"
                )
                return
            installed = remote.install(image=ref, approved=approved, config=parsed)
            out.print(f"installed {installed['id']} {manifest['version']} ({installed['state']})")
            if enable:
                enabled = remote.lifecycle(installed["id"], "enable")
                out.print(f"{enabled['id']} is {enabled['state']}")


def _catalog_entry(
    readme: Path | None,
    categories: list[str] | None,
    keywords: list[str] | None,
    changelog: str,
    signature: Path | None,
) -> dict[str, Any]:
    """The catalog fields, read before anything is pushed (a bad file fails at once)."""
    entry: dict[str, Any] = {
        "categories": list(categories or []),
        "keywords": list(keywords or []),
        "changelog": changelog,
    }
    try:
        if readme is not None:
            entry["readme"] = readme.read_text(encoding="utf-8")
        if signature is not None:
            entry["signature"] = json.loads(signature.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {exc}", BAD_INPUT) from None
    return entry


def dev(
    directory: Annotated[Path, typer.Argument(help="Plugin folder")] = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
    approve_all: Annotated[
        bool, typer.Option("--approve-all/--no-approve-all", help="Approve requested permissions")
    ] = True,
    config: ConfigOption = "{}",
    interval: Annotated[float, typer.Option("--interval", help="Seconds between scans")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Deploy once and exit")] = False,
) -> None:
    """Deploy the folder into a running orchestrator and hot-reload it on every change.

    Each deploy installs the source as version X.Y.Z-dev.N (so the orchestrator keeps its
    rule: one build per version) and reloads the plugin: the old container serves until the
    new one is healthy.
    """
    with reported():
        # A bad folder or option fails at once, before any watching.
        _install_options(plugin_folder(directory), None, approve_all, config)
        with _orchestrator(url, token) as remote:
            remote.check()
            try:
                _watch(directory, remote, approve_all, config, interval, once)
            except KeyboardInterrupt:
                err.print("stopped")  # the orchestrator finishes any reload it was asked for


def _watch(
    directory: Path,
    remote: OrchestratorClient,
    approve_all: bool,
    config: str,
    interval: float,
    once: bool,
) -> None:
    from summit_sdk.cli.introspect import IntrospectionError
    from summit_sdk.cli.manifest import ManifestError

    seen = _snapshot(directory)
    while True:
        try:
            _deploy(directory, remote, approve_all, config)
        except (CliError, OrchestratorError, ManifestError, IntrospectionError) as exc:
            if once:
                raise
            # Keep watching: the author fixes the file and saves again.
            err.print(f"deploy failed: {' '.join(describe(exc).split())}", markup=False)
        if once:
            return
        err.print(f"watching {directory} (Ctrl-C stops)")
        while (now := _snapshot(directory)) == seen:
            time.sleep(interval)
        seen = now


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    from summit_sdk.imagebuild import source_files

    found = {}
    for path in source_files(directory):
        try:
            st = path.stat()
        except OSError:
            continue  # removed while scanning: the next scan sees it
        found[path.relative_to(directory).as_posix()] = (st.st_mtime_ns, st.st_size)
    return found


def _bundle(folder: Path, manifest: dict[str, Any]) -> bytes:
    """A ``.tar.gz`` of the plugin's source with ``manifest`` as its ``plugin.yaml``.

    Reproducible (fixed times and owners) so the orchestrator's content-addressed build can
    reuse an image when only the version changed.
    """
    from summit_sdk.imagebuild import pack_bundle
    from summit_sdk.manifest_yaml import dump_manifest_yaml

    plugin_yaml = dump_manifest_yaml(manifest, sort_keys=False).encode()
    return pack_bundle(folder, replace={"plugin.yaml": plugin_yaml})


def _deploy(directory: Path, remote: OrchestratorClient, approve_all: bool, config: str) -> None:
    started = time.monotonic()
    manifest = plugin_folder(directory)
    check_code(directory, manifest)
    approved, parsed = _install_options(manifest, None, approve_all, config)
    base_version = str(manifest["version"]).split("-", 1)[0].split("+", 1)[0]
    # Strictly increasing across runs of `dev`, and below the release X.Y.Z itself.
    version = f"{base_version}-dev.{time.time_ns() // 1_000_000}"
    data = _bundle(directory, {**manifest, "version": version})
    plugin_id = manifest["id"]
    err.print(f"deploying {plugin_id} {version}")
    remote.install(bundle=data, approved=approved, config=parsed)
    current = remote.plugin(plugin_id) or {}
    state = current.get("state")
    if state == "ACTIVE":
        done = remote.lifecycle(plugin_id, "reload")
    elif state in ("LOADED", "FAILED"):
        done = remote.lifecycle(plugin_id, "enable")
    else:
        done = current
    out.print(
        f"{plugin_id} {done.get('version')} is {done.get('state')} "
        f"({time.monotonic() - started:.1f} s)"
    )
