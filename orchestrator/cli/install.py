"""``summit install``: from a plugin directory, a ``.tar.gz`` bundle or an image reference.

A directory is packed into a bundle here; ``--approve-all`` reads the permissions the
``plugin.yaml`` requests (from the directory or from inside the bundle). The build's progress is
streamed under a spinner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli import render
from orchestrator.cli.connection import INSTALL_TIMEOUT_S, api
from orchestrator.cli.errors import CliError, handle_errors
from orchestrator.cli.options import JsonOpt, TokenOpt, UrlOpt, VerboseOpt, json_arg

# Only bounds the work a hostile file can cause here; the orchestrator applies its own
# SUMMIT_BUNDLE_MAX_BYTES to what is uploaded.
CLI_BUNDLE_BUDGET = 1 << 30


def _manifest_from_bundle(data: bytes) -> dict[str, Any]:
    from orchestrator.domain.errors import SummitError
    from orchestrator.services.bundles import read_bundle_manifest

    try:
        text = read_bundle_manifest(data, max_bytes=CLI_BUNDLE_BUDGET)
    except SummitError as exc:
        raise CliError(exc.code, f"cannot read the bundle: {exc.message}") from None
    return _parse_manifest(text, "plugin.yaml")


def _parse_manifest(text: str | bytes, where: str) -> dict[str, Any]:
    from summit_sdk.manifest_yaml import ManifestTextError, load_manifest_yaml

    try:
        manifest = load_manifest_yaml(text)
    except ManifestTextError as exc:
        raise CliError(
            "invalid_manifest", f"{where} {exc.headline}: {render.one_line(str(exc))}"
        ) from None
    if not isinstance(manifest, dict):
        raise CliError("invalid_manifest", f"{where} is not a mapping")
    return manifest


def _requested_permissions(manifest: dict[str, Any]) -> list[str]:
    perms = manifest.get("permissions") or []
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise CliError("invalid_manifest", "plugin.yaml: 'permissions' must be a list of strings")
    return perms


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or source.endswith((".tar.gz", ".tgz", ".yaml", ".yml"))
        or "\\" in source
    )


def _load_source(source: str) -> tuple[str, bytes | None, str, dict[str, Any] | None]:
    """Return ``(kind, bundle bytes, label, manifest)``; kind is ``bundle`` or ``image``."""
    path = Path(source).expanduser()
    if path.is_file() and path.name in ("plugin.yaml", "plugin.yml"):
        path = path.parent
    if path.is_dir():
        manifest_path = path / "plugin.yaml"
        if not manifest_path.is_file():
            raise CliError("bad_input", f"{path} has no plugin.yaml")
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError("bad_input", f"cannot read {manifest_path}: {exc}") from None
        manifest = _parse_manifest(text, str(manifest_path))
        from orchestrator.services.bundles import pack_directory

        try:
            data = pack_directory(path)
        except OSError as exc:
            raise CliError("bad_input", f"cannot pack {path}: {exc}") from None
        return "bundle", data, f"{path.resolve().name}.tar.gz", manifest
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise CliError(
                "bad_input",
                f"{path} is neither a plugin directory nor a .tar.gz bundle",
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError("bad_input", f"cannot read {path}: {exc.strerror}") from None
        return "bundle", data, path.name, None
    if _looks_like_path(source):
        raise CliError("bad_input", f"{source}: no such file or directory")
    return "image", None, source, None


@handle_errors
def install(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            help="A plugin directory (with plugin.yaml), a .tar.gz bundle, or an image reference."
        ),
    ],
    approve: Annotated[
        list[str] | None,
        typer.Option("--approve", help="Grant this permission (repeatable).", show_default=False),
    ] = None,
    approve_all: Annotated[
        bool,
        typer.Option("--approve-all", help="Grant every permission the plugin.yaml requests."),
    ] = False,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", help="Plugin config as a JSON object (or @file).", show_default=False
        ),
    ] = None,
    enable: Annotated[
        bool, typer.Option("--enable", help="Enable the plugin once installed.")
    ] = False,
    signature: Annotated[
        str | None,
        typer.Option(
            "--signature", help="Signature file from `summit-plugin sign`.", show_default=False
        ),
    ] = None,
    allow_findings: Annotated[
        str | None,
        typer.Option(
            "--allow-findings",
            metavar="REASON",
            help="Install despite blocking scanner findings (admin; the reason is recorded).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Install a plugin from a directory, a .tar.gz bundle or an image reference."""
    envelope = json_arg(f"@{signature}", "--signature") if signature else None
    if envelope is not None and not isinstance(envelope, dict):
        raise CliError("bad_input", "--signature must be a JSON object (a signature file)")
    cfg: Any = {}
    if config is not None:
        cfg = json_arg(config, "--config")
        if not isinstance(cfg, dict):
            raise CliError("bad_input", "--config must be a JSON object")
    kind, data, label, manifest = _load_source(source)
    approved = list(dict.fromkeys(approve or []))
    if approve_all:
        if kind != "bundle" or data is None:
            raise CliError(
                "bad_input",
                "--approve-all needs a plugin directory or bundle; for an image, list the "
                "permissions with --approve",
            )
        if manifest is None:
            manifest = _manifest_from_bundle(data)
        approved = list(dict.fromkeys([*approved, *_requested_permissions(manifest)]))

    client = api(ctx, url, token)
    latest = [""]

    def on_progress(line: str) -> None:
        latest[0] = line

    source_args: dict[str, Any] = (
        {"bundle": data, "bundle_name": label} if kind == "bundle" else {"image": label}
    )
    plugin = render.with_spinner(
        f"Installing {label}",
        lambda: client.install(
            **source_args,
            approved=approved,
            config=cfg,
            signature=envelope,
            override_reason=allow_findings,
            on_progress=on_progress,
            timeout=INSTALL_TIMEOUT_S,
        ),
        detail=lambda: latest[0],
    )
    if enable and isinstance(plugin, dict) and plugin.get("id"):
        if not json_out:
            render.plugin_line(plugin, "Installed")
        plugin = render.with_spinner(
            f"Enabling {plugin['id']} ...",
            lambda: client.lifecycle(plugin["id"], "enable", timeout=INSTALL_TIMEOUT_S),
        )
        verb = "Enabled"
    else:
        verb = "Installed"
    if json_out:
        render.print_json(plugin)
    elif isinstance(plugin, dict):
        render.plugin_line(plugin, verb)
