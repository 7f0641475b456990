"""Webhook forms: register a subscription, change its URL, filters, transformation and retry
policy, and remove it. Each form stands for a REST request (``POST /v1/webhooks``,
``PATCH /v1/webhooks/{id}``, ``DELETE /v1/webhooks/{id}``): it is allowed by that request's
rule, its fields are checked by that route's own body model, and it calls the
:class:`~orchestrator.services.webhooks.WebhookService` method that route calls.

A refused form comes back filled in, with the reason next to the field it is about (422);
nothing is stored. A new subscription's signing secret is shown on the answer to the form
and never again (it is kept sealed), so that answer is a page, not a redirect.

There is no secret rotation here because the REST API has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from orchestrator.api.routes.webhooks import NewWebhook, WebhookChanges
from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.events.webhooks import FIELD_ROOTS, OPS, SIGNATURE_HEADER
from orchestrator.services.webhooks import RetryPolicy, WebhookService
from orchestrator.web.forms import checked
from orchestrator.web.guard import UiContext, UiDep, UiRoute

__all__ = ["router"]

router = APIRouter(route_class=UiRoute)


POLICY_FIELDS = tuple(RetryPolicy.__dataclass_fields__)
TRANSFORM_KINDS = ("", "jmespath", "template")
# Each policy field's label and what it takes (the bounds are RetryPolicy.check's).
POLICY_WORDS = {
    "max_attempts": ("Attempts per delivery", "1 to 50; then it is a dead letter.", "1"),
    "backoff_base_s": (
        "First retry after (s)",
        "0.01 to 3600; later waits grow from it, with jitter.",
        "any",
    ),
    "backoff_cap_s": ("Longest wait (s)", "From the first wait up to 86400.", "any"),
    "timeout_s": ("Answer timeout (s)", "0.1 to 120.", "any"),
    "pause_after": (
        "Pause after dead letters in a row",
        "0 never pauses; up to 100000.",
        "1",
    ),
}
# Where a refusal is shown: the first word of its message names the field ("policy.timeout_s:
# ...", "where[1]: ...", "webhook url: ..."), as the service and the body model word them.
_FIELD_OF_PREFIX = (
    ("webhook url", "url"),
    ("url", "url"),
    ("types", "types"),
    ("where", "where"),
    ("transform", "transform"),
    ("description", "description"),
    ("secret", "secret"),
    *((f"policy.{name}", name) for name in POLICY_FIELDS),
    ("policy", "policy"),
)


@dataclass
class WebhookFields:
    """The form as typed (what it shows again after a refusal), and its REST body."""

    url: str = ""
    types: str = ""
    description: str = ""
    secret: str = ""
    where: str = ""
    transform_kind: str = ""
    jmespath: str = ""
    template: str = ""
    policy: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_form(cls, form: FormData) -> WebhookFields:
        def text(name: str) -> str:
            value = form.get(name)
            return value.strip() if isinstance(value, str) else ""

        return cls(
            url=text("url"),
            types=text("types"),
            description=text("description"),
            secret=text("secret"),
            where=text("where"),
            transform_kind=text("transform_kind"),
            jmespath=text("jmespath"),
            template=text("template"),
            policy={name: text(name) for name in POLICY_FIELDS},
        )

    @classmethod
    def of_hook(cls, hook: dict[str, Any]) -> WebhookFields:
        """A stored subscription (the service's view) as its edit form shows it."""
        transform = hook.get("transform") or {}
        kind = next(iter(transform), "")
        return cls(
            url=hook["url"],
            types="\n".join(hook["types"]),
            description=hook.get("description") or "",
            where=json.dumps(hook["where"], indent=2) if hook.get("where") else "",
            transform_kind=kind,
            jmespath=transform.get("jmespath", "") if kind == "jmespath" else "",
            template=json.dumps(transform["template"], indent=2) if kind == "template" else "",
            policy={name: _number(hook["policy"][name]) for name in POLICY_FIELDS},
        )

    def body(self) -> dict[str, Any]:
        """The JSON a REST client would send for this form (before the body model checks it).
        Empty policy fields are left out: the defaults (new) or the current values (edit)."""
        return {
            "url": self.url,
            "types": [t.strip() for t in self.types.replace(",", "\n").splitlines() if t.strip()],
            "where": _json(self.where, "where", default=[]),
            "transform": self._transform(),
            "description": self.description or None,
            "policy": {name: value for name, value in self.policy.items() if value},
        }

    def _transform(self) -> dict[str, Any] | None:
        if self.transform_kind not in TRANSFORM_KINDS:
            raise InvalidInput("transform: none, a JMESPath expression or a JSON template")
        if self.transform_kind == "jmespath":
            return {"jmespath": self.jmespath}
        if self.transform_kind == "template":
            if not self.template:
                raise InvalidInput('transform.template: a JSON template, e.g. {"id": "{{ id }}"}')
            return {"template": _json(self.template, "transform.template", default=None)}
        return None


def _number(value: Any) -> str:
    """A policy value as a field shows it: ``1.0`` as ``1``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _json(text: str, name: str, *, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{name}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None


def _errors_of(exc: SummitError) -> dict[str, str]:
    """Each reason of a refusal under the field it is about ('' when it is about none)."""
    reasons = exc.details if isinstance(exc.details, list) else [exc.message]
    found: dict[str, str] = {}
    for reason in map(str, reasons):
        where = next((f for prefix, f in _FIELD_OF_PREFIX if reason.startswith(prefix)), "")
        found[where] = f"{found[where]}; {reason}" if where in found else reason
    return found


def _service(ui: UiContext) -> WebhookService:
    service: WebhookService = ui.request.app.state.webhooks
    return service


def _form_page(
    ui: UiContext,
    fields: WebhookFields,
    *,
    hook: dict[str, Any] | None = None,
    error: SummitError | None = None,
) -> Response:
    defaults = _service(ui).defaults
    return ui.render(
        "webhook_form.html",
        error.status_code if error is not None else 200,
        hook=hook,
        fields=fields,
        error=error.message if error is not None else "",
        errors=_errors_of(error) if error is not None else {},
        policy_words=POLICY_WORDS,
        defaults={name: _number(getattr(defaults, name)) for name in POLICY_FIELDS},
        ops=OPS,
        field_roots=FIELD_ROOTS,
    )


# -- new ------------------------------------------------------------------------------------------


@router.get("/webhooks/new", name="ui_webhook_new")
async def new_webhook(ui: UiDep) -> Response:
    await ui.require("POST", "/v1/webhooks")
    return _form_page(ui, WebhookFields())


@router.post("/webhooks/new")
async def create_webhook(ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require("POST", "/v1/webhooks")
    fields = WebhookFields.of_form(form)
    service = _service(ui)
    try:
        body = checked(NewWebhook, {**fields.body(), "secret": fields.secret or None})
        created = await run_in_threadpool(
            lambda: service.create(
                url=body.url,
                types=body.types,
                where=body.where,
                transform=body.transform,
                description=body.description,
                secret=body.secret,
                policy=body.policy.model_dump(exclude_none=True),
            )
        )
    except SummitError as exc:
        return _form_page(ui, fields, error=exc)
    # The secret is on this answer only (it is stored sealed): no redirect that would lose it.
    return ui.render("webhook_created.html", 201, hook=created, signature_header=SIGNATURE_HEADER)


# -- edit -----------------------------------------------------------------------------------------


def _changes(hook: dict[str, Any], body: WebhookChanges) -> dict[str, Any]:
    """What the form changes, as the REST route hands a PATCH body to the service, less what
    is as it was (an unchanged URL is not checked again, so a receiver registered before an
    operator narrowed ``SUMMIT_WEBHOOK_ALLOW_PRIVATE`` can still have its filters edited)."""
    changes = body.model_dump(exclude_unset=True)
    if body.policy is not None:
        changes["policy"] = {
            name: value
            for name, value in body.policy.model_dump(exclude_none=True).items()
            if value != hook["policy"][name]
        }
    return {
        name: value
        for name, value in changes.items()
        if value != hook.get(name) and not (name == "policy" and not value)
    }


@router.get("/webhooks/{webhook_id}/edit", name="ui_webhook_edit")
async def edit_webhook(webhook_id: str, ui: UiDep) -> Response:
    await ui.require("PATCH", f"/v1/webhooks/{webhook_id}")
    hook = await run_in_threadpool(_service(ui).get, webhook_id)
    return _form_page(ui, WebhookFields.of_hook(hook), hook=hook)


@router.post("/webhooks/{webhook_id}/edit")
async def change_webhook(webhook_id: str, ui: UiDep) -> Response:
    form = await ui.form()
    await ui.require("PATCH", f"/v1/webhooks/{webhook_id}")
    service = _service(ui)
    hook = await run_in_threadpool(service.get, webhook_id)
    fields = WebhookFields.of_form(form)
    try:
        changes = _changes(hook, checked(WebhookChanges, fields.body()))
        if changes:
            await run_in_threadpool(service.update, webhook_id, changes)
    except SummitError as exc:
        return _form_page(ui, fields, hook=hook, error=exc)
    if changes:
        ui.flash("ok", f"Webhook {webhook_id} changed: {', '.join(sorted(changes))}.")
    else:
        ui.flash("ok", f"Webhook {webhook_id}: nothing to change.")
    return ui.back(f"/ui/webhooks/{webhook_id}")


# -- delete ---------------------------------------------------------------------------------------


@router.post("/webhooks/{webhook_id}/delete")
async def delete_webhook(webhook_id: str, ui: UiDep) -> Response:
    """``DELETE /v1/webhooks/{id}``, once the form's ``confirm`` is the webhook's id: the
    subscription goes with its whole delivery history."""
    form = await ui.form()
    await ui.require("DELETE", f"/v1/webhooks/{webhook_id}")
    try:
        confirm = form.get("confirm")
        if not isinstance(confirm, str) or confirm.strip() != webhook_id:
            raise InvalidInput(f"type the webhook's id ({webhook_id}) to delete it")
        await run_in_threadpool(_service(ui).delete, webhook_id)
    except SummitError as exc:
        ui.flash("error", f"delete {webhook_id}: {exc.message}")
        return ui.back(f"/ui/webhooks/{webhook_id}")
    ui.flash("ok", f"Webhook {webhook_id} deleted with its delivery history.")
    return ui.back("/ui/webhooks")
