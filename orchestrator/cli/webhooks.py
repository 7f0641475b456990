"""``summit webhook``: outside receivers of events (add, list, deliveries, replay, pause,
resume, rm). Deliveries are signed and retried by the orchestrator; this is their console."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orchestrator.cli import render
from orchestrator.cli.connection import api
from orchestrator.cli.errors import handle_errors
from orchestrator.cli.options import JsonOpt, TokenOpt, UrlOpt, VerboseOpt, json_option

webhook_app = typer.Typer(
    help="Webhooks: outside receivers of events (signed, retried, replayable).",
    no_args_is_help=True,
)

WebhookId = Annotated[str, typer.Argument(metavar="ID")]


@webhook_app.command("add")
@handle_errors
def webhook_add(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="URL", help="The receiver (http or https).")],
    types: Annotated[
        list[str], typer.Option("--type", help="Event type pattern (repeatable), e.g. plugin.*")
    ],
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help='JSON list of predicates, e.g. \'[{"field": "payload.total", "op": "gt", '
            '"value": 100}]\'',
            show_default=False,
        ),
    ] = None,
    jmespath: Annotated[
        str | None,
        typer.Option(
            "--jmespath", help="Reshape each event with this expression.", show_default=False
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="JSON, e.g. '{\"max_attempts\": 5}'", show_default=False),
    ] = None,
    description: Annotated[str | None, typer.Option("--description", show_default=False)] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Register a receiver; its signing secret is printed once (store it now)."""
    spec: dict[str, Any] = {"url": target, "types": types}
    if where is not None:
        spec["where"] = json_option(where, "--where")
    if jmespath is not None:
        spec["transform"] = {"jmespath": jmespath}
    if policy is not None:
        spec["policy"] = json_option(policy, "--policy")
    if description is not None:
        spec["description"] = description
    created = api(ctx, url, token).post("/v1/webhooks", json=spec)
    render.stderr().print(f"created {created['id']}; its signing secret is shown only once:")
    typer.echo(created["secret"])


@webhook_app.command("list")
@handle_errors
def webhook_list(
    ctx: typer.Context,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Subscriptions with their status and delivery counts."""
    hooks = api(ctx, url, token).get("/v1/webhooks")["webhooks"]
    if as_json:
        render.print_json(hooks)
        return
    render.stdout().print(render.webhooks_table(hooks))


@webhook_app.command("deliveries")
@handle_errors
def webhook_deliveries(
    ctx: typer.Context,
    webhook_id: WebhookId,
    dead: Annotated[bool, typer.Option("--dead", help="Only dead letters.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delivery history, newest first."""
    path = f"/v1/webhooks/{webhook_id}/" + ("dead-letters" if dead else "deliveries")
    found = api(ctx, url, token).get(path, params={"limit": limit})["deliveries"]
    if as_json:
        render.print_json(found)
        return
    render.stdout().print(render.deliveries_table(found))


@webhook_app.command("replay")
@handle_errors
def webhook_replay(
    ctx: typer.Context,
    webhook_id: WebhookId,
    delivery: Annotated[
        int | None, typer.Option("--delivery", help="One delivery.", show_default=False)
    ] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead letter.")] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Every matching event from (ISO time).", show_default=False),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", show_default=False)] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Send again: one delivery, every dead letter, or a time range of events."""
    body: dict[str, Any] = {"dead_letters": dead}
    if delivery is not None:
        body["delivery_id"] = delivery
    if since is not None:
        body["since"] = since
    if until is not None:
        body["until"] = until
    answer = api(ctx, url, token).post(f"/v1/webhooks/{webhook_id}/replay", json=body)
    render.stdout().print(
        f"queued {answer['queued']} deliveries"
        + (f" ({answer['note']})" if answer.get("note") else "")
    )


def _set_status(
    ctx: typer.Context, webhook_id: str, status: str, url: str | None, token: str | None
) -> None:
    changed = api(ctx, url, token).patch(f"/v1/webhooks/{webhook_id}", json={"status": status})
    render.stdout().print(f"{changed['id']} is {changed['status']}")


@webhook_app.command("pause")
@handle_errors
def webhook_pause(
    ctx: typer.Context,
    webhook_id: WebhookId,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Stop sending (deliveries wait); resume sends them."""
    _set_status(ctx, webhook_id, "paused", url, token)


@webhook_app.command("resume")
@handle_errors
def webhook_resume(
    ctx: typer.Context,
    webhook_id: WebhookId,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Send again after a pause (automatic or not)."""
    _set_status(ctx, webhook_id, "active", url, token)


@webhook_app.command("rm")
@handle_errors
def webhook_rm(
    ctx: typer.Context,
    webhook_id: WebhookId,
    url: UrlOpt = None,
    token: TokenOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove a subscription with its deliveries and history."""
    api(ctx, url, token).delete(f"/v1/webhooks/{webhook_id}")
    render.stdout().print(f"removed {webhook_id}")
