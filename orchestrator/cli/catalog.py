"""``summit catalog``: carry the plugin catalog to an air-gapped site as one signed file.

``summit catalog export FILE --key KEY.pem`` asks the orchestrator for the archive (an OCI
image layout with every version's image, the catalog's index and its signature, see
``orchestrator/catalog/archive.py``) and writes it to FILE as it arrives; FILE appears only
once it is complete. ``summit catalog import FILE --registry PREFIX`` uploads it to another
orchestrator, which checks the signature against its trust store, pushes the images under
PREFIX and publishes the versions; it prints what was imported, skipped and in conflict.

The signing key is read here and sent to the orchestrator for this one request (it holds no
private keys of its own); use an HTTPS ``--url`` when the orchestrator is not on this host.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from summit_sdk.client import OrchestratorClient

from orchestrator.cli import render
from orchestrator.cli.connection import api
from orchestrator.cli.errors import EXIT_FAILURE, CliError, handle_errors
from orchestrator.cli.options import JsonOpt, TokenOpt, UrlOpt, VerboseOpt

catalog_app = typer.Typer(
    help="The plugin catalog: export it as a signed file, import it on another site.",
    no_args_is_help=True,
)

# An export is written whole before it is answered, and an import pushes every image before
# it answers: both take as long as the images take to copy.
ARCHIVE_TIMEOUT_S = 3600.0
MAX_KEY_BYTES = 16 * 1024


def _read_key(path: Path) -> str:
    """The PEM text of an Ed25519 private key, checked here so a wrong file fails at once."""
    from summit_sdk.signing import SignatureError, load_private_key

    path = path.expanduser()
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise CliError("bad_input", f"{path} is too large to be a signing key")
        load_private_key(path)
        return path.read_text(encoding="ascii")
    except OSError as exc:
        raise CliError("bad_input", f"cannot read {path}: {exc.strerror}") from None
    except (SignatureError, UnicodeDecodeError) as exc:
        raise CliError("bad_input", f"--key: {exc}") from None


def _download(client: OrchestratorClient, path: str, body: dict[str, Any], dest: Path) -> Any:
    """POST ``body`` and write the answer to ``dest`` as it arrives; the answer's headers.

    The SDK client reads whole answers; an archive can be larger than memory, so its HTTP
    session is streamed here, with its own error mapping."""
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    try:
        with (
            client._transport_errors(),
            client._session().stream("POST", path, json=body, timeout=ARCHIVE_TIMEOUT_S) as answer,
        ):
            if answer.status_code >= 400:
                answer.read()
                client._decode(answer)  # raises the API's error
            with partial.open("wb") as out:
                for chunk in answer.iter_bytes():
                    out.write(chunk)
            headers = answer.headers
        partial.replace(dest)
    except OSError as exc:
        raise CliError(
            "write_failed", f"cannot write {dest}: {exc.strerror}", exit_code=EXIT_FAILURE
        ) from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return headers


@catalog_app.command("export")
@handle_errors
def catalog_export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the archive.")],
    key: Annotated[
        Path,
        typer.Option("--key", help="Ed25519 private key (PEM) that signs the archive."),
    ],
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="Export only this plugin (repeatable).", show_default=False),
    ] = None,
    exclude_yanked: Annotated[
        bool, typer.Option("--exclude-yanked", help="Leave yanked versions out.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write the catalog (its plugins, versions and images) to FILE, signed with KEY."""
    dest = file.expanduser()
    if dest.is_dir():
        raise CliError("bad_input", f"{dest} is a directory; name the archive file")
    if not dest.parent.is_dir():
        raise CliError("bad_input", f"{dest.parent} does not exist")
    body: dict[str, Any] = {"key": _read_key(key), "include_yanked": not exclude_yanked}
    if plugin:
        body["ids"] = plugin
    headers = _download(api(ctx, url, token), "/v1/catalog/export", body, dest)
    render.stdout().print(
        f"exported {headers.get('x-summit-versions', '?')} versions to {dest} "
        f"({dest.stat().st_size} bytes), signed by key {headers.get('x-summit-key-id', '?')}"
    )


@catalog_app.command("import")
@handle_errors
def catalog_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An archive from export.")],
    registry: Annotated[
        str,
        typer.Option(
            "--registry",
            help="Where the images go: host[:port][/path], e.g. mirror.local/summit.",
        ),
    ],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import an archive: its images are pushed under --registry, its versions published."""
    source = file.expanduser()
    if not source.is_file():
        raise CliError("bad_input", f"{source} is not a file")
    if not registry.strip():
        raise CliError("bad_input", "--registry is empty")
    client = api(ctx, url, token)
    try:
        with source.open("rb") as upload:
            report = client.post(
                "/v1/catalog/import",
                params={"registry": registry.strip()},
                content=upload,
                headers={"Content-Type": "application/x-tar"},
                timeout=ARCHIVE_TIMEOUT_S,
            )
    except OSError as exc:
        raise CliError("bad_input", f"cannot read {source}: {exc.strerror}") from None
    if as_json:
        render.print_json(report)
        return
    out, err = render.stdout(), render.stderr()
    for item in report.get("imported", []):
        yanked = " (yanked)" if item.get("yanked") else ""
        out.print(f"imported {item['plugin_id']} {item['version']} as {item['image']}{yanked}")
    for item in report.get("updated", []):
        out.print(f"{item['change']} {item['plugin_id']} {item.get('version', '')}".rstrip())
    for item in report.get("conflicts", []):
        what = item.get("namespace") or f"{item.get('plugin_id')} {item.get('version')}"
        err.print(f"conflict: {what}: {item.get('message')}")
    blobs = report.get("blobs", {})
    out.print(
        f"{len(report.get('imported', []))} imported, {len(report.get('skipped', []))} "
        f"skipped (already here), {len(report.get('conflicts', []))} conflicts; "
        f"{blobs.get('pushed', 0)} blobs pushed ({blobs.get('bytes_pushed', 0)} bytes); "
        f"signed by key {report.get('key_id')}"
    )
