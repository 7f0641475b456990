"""Who may do what: ``summit token`` (API tokens with roles), ``summit trust`` (publisher keys
that sign plugins), ``summit secret`` (plugin secrets, write-only) and ``summit audit``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli import render
from orchestrator.cli.connection import api
from orchestrator.cli.errors import CliError, handle_errors
from orchestrator.cli.options import JsonOpt, TokenOpt, UrlOpt, VerboseOpt

token_app = typer.Typer(
    help="API tokens with roles (admin, operator, publisher, viewer).", no_args_is_help=True
)
trust_app = typer.Typer(help="Publisher keys trusted to sign plugins.", no_args_is_help=True)
secret_app = typer.Typer(
    help="Plugin secrets (write-only; read by plugins with secrets:read).", no_args_is_help=True
)


@token_app.command("create")
@handle_errors
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    role: Annotated[
        str, typer.Option("--role", help="admin, operator, publisher or viewer.")
    ] = "viewer",
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Create a token; it is printed once (store it now)."""
    created = api(ctx, url, token).post("/v1/tokens", json={"name": name, "role": role})
    render.stderr().print(
        f"created {created['id']} ({created['role']}); the token is shown only once:"
    )
    typer.echo(created["token"])


@token_app.command("list")
@handle_errors
def token_list(
    ctx: typer.Context,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """API tokens (never their values)."""
    tokens = api(ctx, url, token).get("/v1/tokens")
    if as_json:
        render.print_json(tokens)
        return
    render.stdout().print(render.tokens_table(tokens))


@token_app.command("revoke")
@handle_errors
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id (tok_...).")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Revoke a token at once."""
    revoked = api(ctx, url, token).delete(f"/v1/tokens/{token_id}")
    render.stdout().print(f"revoked {revoked['id']} ({revoked['name']})")


@trust_app.command("add")
@handle_errors
def trust_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The publisher's name.")],
    key: Annotated[Path, typer.Option("--key", help="Ed25519 public key (PEM file).")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Trust a publisher's key to sign plugins."""
    try:
        pem = key.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError("bad_input", f"cannot read {key}: {exc.strerror}") from None
    added = api(ctx, url, token).post("/v1/trust/keys", json={"name": name, "public_key": pem})
    render.stdout().print(f"trusted key {added['key_id']} ({added['name']})")


@trust_app.command("list")
@handle_errors
def trust_list(
    ctx: typer.Context,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Trusted publisher keys."""
    render.stdout().print(render.keys_table(api(ctx, url, token).get("/v1/trust/keys")))


@trust_app.command("revoke")
@handle_errors
def trust_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Stop trusting a key (for good)."""
    revoked = api(ctx, url, token).delete(f"/v1/trust/keys/{key_id}")
    render.stdout().print(f"revoked key {revoked['key_id']} ({revoked['name']})")


@secret_app.command("set")
@handle_errors
def secret_set(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    name: Annotated[str, typer.Argument(help="Secret name.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Set a secret from standard input (so it stays out of the shell history)."""
    value = sys.stdin.read().rstrip("\n")
    if not value:
        raise CliError("bad_input", "the secret's value is read from standard input; it was empty")
    api(ctx, url, token).put(f"/v1/plugins/{plugin_id}/secrets/{name}", json={"value": value})
    render.stdout().print(f"set secret {name} of {plugin_id}")


@secret_app.command("list")
@handle_errors
def secret_list(
    ctx: typer.Context,
    plugin_id: Annotated[str, typer.Argument(metavar="ID", help="Plugin id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Names of a plugin's secrets (values are never shown)."""
    for item in api(ctx, url, token).get(f"/v1/plugins/{plugin_id}/secrets"):
        render.stdout().print(f"{item['name']}  (set {item['updated_at']})")


@handle_errors
def audit(
    ctx: typer.Context,
    plugin: Annotated[
        str | None, typer.Option("--plugin", help="Only this plugin.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Refused host API calls and other security events, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if plugin:
        params["plugin"] = plugin
    records = api(ctx, url, token).get("/v1/audit", params=params)["records"]
    render.stdout().print(render.audit_table(records))
