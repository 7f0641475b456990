"""The web UI end to end in Debian's Chromium, against a real orchestrator (SQLite, Docker,
the OCI registry on 127.0.0.1:5000): sign in, search the marketplace, install a plugin
through the permission dialog (its config form refusing a bad value with the API's message),
see it ACTIVE, call it and see the call counted and on its chart, follow events live, draw the
dashboard through a visualization plugin, replay a dead webhook delivery, disable it.
A viewer sees no button it cannot use and a forged POST is refused; a README holding a
``<script>`` runs nothing. No page logs a Content-Security-Policy violation. Each page is
saved as a screenshot in test-artifacts/screenshots/, some at a phone's width (390 px).

The tests run in order and share one orchestrator, one published plugin and one browser."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import REPO
from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.fixtures.receiver import Receiver
from tests.fixtures.waiting import wait_until
from tests.integration.conftest import sqlite_orchestrator

from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"
PID = "com.uitest.echo"
README = (
    "# Echo\n\nRepeats what it is given.\n\n<script>alert(1)</script>\n\n"
    "<img src=x onerror=alert(2)>\n\n[click me](javascript:alert(3))\n"
)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
SLOW_MS = 180_000  # an install pulls, scans and starts a container


@pytest.fixture(scope="module", autouse=True)
def pushed_images_removed(docker_client: Any) -> Iterator[None]:
    """Set up before the orchestrator, so torn down after it: the local copies of the image
    pushed to the registry (by its repository there) go once the orchestrator is gone."""
    yield
    for image in docker_client.images.list(name=f"{REGISTRY}/summit-tests/{PID}"):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(image.id, force=True)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        r.behave("/hook", status=500)  # every delivery dies until the test says otherwise
        yield r


@pytest.fixture(scope="module")
def orch(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "ui",
        webhook_allow_private="127.0.0.1/32",
        webhook_max_attempts="1",
        monitor_interval_s="1",  # a call reaches its chart within a second or two
    ) as o:
        yield o


@pytest.fixture(scope="module")
def webhook(orch: OrchestratorProcess, receiver: Receiver) -> str:
    """A webhook of every plugin event, made before anything is installed; three dead letters
    in a row pause it (the plugins the tests install give it more than that)."""
    r = orch.client.post(
        "/v1/webhooks",
        json={"url": receiver.url("/hook"), "types": ["plugin.*"], "policy": {"pause_after": 3}},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def push_image(orch: OrchestratorProcess, docker_client: Any, src: Path) -> str:
    """Build the plugin through an install, push its image to the registry and forget it
    here: its reference by digest."""
    r = orch.install_dir(src, approve=["read:data"])
    assert r.status_code == 201, r.text
    [image] = docker_client.images.list(name=f"summit-plugin/{PID}")
    repo = f"{REGISTRY}/summit-tests/{PID}"
    tag = f"{repo}:1.0.0-{secrets.token_hex(3)}"
    image.tag(tag)
    for line in docker_client.images.push(tag, stream=True, decode=True):
        assert "error" not in line, line
    digest = next(
        d for d in docker_client.images.get(tag).attrs["RepoDigests"] if d.startswith(repo)
    )
    docker_client.images.remove(tag)
    assert orch.client.delete(f"/v1/plugins/{PID}").status_code == 204
    return str(digest)


@pytest.fixture(scope="module")
def published(
    orch: OrchestratorProcess,
    docker_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
    webhook: str,
) -> str:
    """The probe plugin in the catalog as com.uitest.echo 1.0.0 (asks for read:data; its
    config_schema wants init_delay_s >= 0), with a hostile README."""
    src = make_plugin(
        tmp_path_factory.mktemp("echo") / "echo",
        id=PID,
        version="1.0.0",
        name="Echo",
        description="Repeats what it is given",
        permissions=["read:data"],
    )
    digest = push_image(orch, docker_client, src)
    token = orch.client.post("/v1/tokens", json={"name": "uitest-ci", "role": "publisher"}).json()
    r = orch.client.post(
        "/v1/catalog/publishers",
        json={
            "id": "uitest",
            "name": "UI Test",
            "token_id": token["id"],
            "namespaces": ["com.uitest."],
        },
    )
    assert r.status_code == 201, r.text
    with httpx.Client(
        base_url=orch.url, headers={"Authorization": f"Bearer {token['token']}"}, timeout=120
    ) as publisher:
        r = publisher.post(
            f"/v1/catalog/plugins/{PID}/versions",
            json={"image": digest, "readme": README, "categories": ["text"], "keywords": ["echo"]},
        )
        assert r.status_code == 201, r.text
    return PID


class Console:
    """What a page said that a user would not want: dialogs, errors, CSP violations."""

    def __init__(self, page: Any) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page = page

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if message.type == "error":
            where = message.location or {}
            self.errors.append(f"{message.text} ({where.get('url')}:{where.get('lineNumber')})")

    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e]


def sign_in(page: Any, token: str) -> None:
    page.goto("/ui/sign-in")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/plugins")


def open_page(browser: Any, orch: OrchestratorProcess, token: str, viewport: Any = None) -> Any:
    context = browser.new_context(base_url=orch.url, viewport=viewport or DESKTOP)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.console = Console(page)
    sign_in(page, token)
    return page


@pytest.fixture
def admin(browser: Any, orch: OrchestratorProcess) -> Iterator[Any]:
    page = open_page(browser, orch, TOKEN)
    yield page
    violations = page.console.csp_violations()
    page.context.close()
    assert violations == [], violations


def test_signing_in_and_the_pages_headers(browser: Any, orch: OrchestratorProcess) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=orch.url, viewport=DESKTOP)
    try:
        page = context.new_page()
        console = Console(page)
        answer = page.goto("/ui/plugins")  # no session: to the sign-in page
        assert page.url.endswith("/ui/sign-in?next=/ui/plugins")
        csp = answer.headers["content-security-policy"]
        for part in ("default-src 'self'", "script-src 'self'", "object-src 'none'"):
            assert part in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        screenshot(page, "sign-in")

        page.fill("#token", "smt_not-a-real-token")
        page.click("button[type=submit]")
        expect(page.locator(".flash-error")).to_contain_text("not accepted")

        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/plugins")
        expect(page.locator(".who .role")).to_have_text("admin")
        cookie = next(c for c in context.cookies() if c["name"] == "summit_ui")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]
        screenshot(page, "plugins-empty")
        assert console.csp_violations() == []
    finally:
        context.close()


def test_a_trusted_proxys_https_makes_the_cookies_secure(orch: OrchestratorProcess) -> None:
    """uvicorn believes X-Forwarded-Proto from SUMMIT_FORWARDED_ALLOW_IPS (127.0.0.1 here)."""
    with httpx.Client(base_url=orch.url) as plain:
        assert "Secure" not in plain.get("/ui/sign-in").headers["set-cookie"]
        proxied = plain.get("/ui/sign-in", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in proxied.headers["set-cookie"]


def test_searching_the_marketplace(admin: Any, published: str) -> None:
    from playwright.sync_api import expect

    admin.goto("/ui/marketplace")
    card = admin.locator(f'.card[data-plugin="{published}"]')
    expect(card).to_be_visible()
    expect(card).to_contain_text("unsigned")
    expect(card).to_contain_text("runs here: 1.0.0")

    admin.fill("#q", "zebra")  # htmx searches as one types, no page load
    expect(admin.locator(".cards .empty")).to_contain_text("Nothing matches")
    assert "q=zebra" in admin.url
    admin.fill("#q", "ech")
    expect(card).to_be_visible()
    expect(admin.locator("#result-count")).to_contain_text("1 plugin")
    admin.locator(".facets a", has_text="analyzer").click()
    admin.wait_for_url("**point=analyzer**")
    expect(admin.locator("#f-point")).to_have_value("analyzer")
    expect(card).to_be_visible()
    screenshot(admin, "marketplace")


def test_a_readme_with_a_script_runs_nothing(admin: Any, published: str) -> None:
    from playwright.sync_api import expect

    admin.goto(f"/ui/marketplace/{published}")
    readme = admin.locator("#readme")
    expect(readme).to_contain_text("<script>alert(1)</script>")  # shown as text
    expect(readme).to_contain_text("<img src=x onerror=alert(2)>")
    assert readme.locator("script, img, iframe").count() == 0
    assert readme.locator("a[href^='javascript']").count() == 0
    admin.wait_for_timeout(500)
    assert admin.console.dialogs == [] and admin.console.errors == []
    expect(admin.locator("#install")).to_be_visible()
    screenshot(admin, "catalog-plugin")


def test_installing_through_the_permission_dialog(
    admin: Any, orch: OrchestratorProcess, published: str
) -> None:
    from playwright.sync_api import expect

    admin.goto(f"/ui/marketplace/{published}")
    admin.click("#install")
    admin.wait_for_url(f"**/ui/marketplace/{published}/install")
    expect(admin.locator("#install-set")).to_contain_text(published)
    permission = admin.locator("input[name=permission][value='read:data']")
    expect(permission).not_to_be_checked()
    expect(admin.locator("#permissions")).to_contain_text("Read records")
    screenshot(admin, "install-dialog")

    permission.check()
    admin.get_by_label("init_delay_s").fill("-1")
    admin.click("#install-submit")
    expect(admin.locator(".field-error")).to_have_text("-1 is less than the minimum of 0")
    expect(permission).to_be_checked()  # what was chosen is kept
    assert orch.client.get(f"/v1/plugins/{published}").status_code == 404
    screenshot(admin, "install-dialog-invalid")

    admin.get_by_label("init_delay_s").fill("0")
    admin.click("#install-submit")
    admin.wait_for_url(f"**/ui/plugins/{published}", timeout=SLOW_MS)
    expect(admin.locator(".flash-ok")).to_contain_text(f"Installed {published}")
    orch.wait_state(published, "ACTIVE", timeout_s=60)
    admin.reload()
    expect(admin.locator(".state-box .state")).to_have_text("ACTIVE")
    assert orch.plugin(published)["granted_permissions"] == ["read:data"]
    assert orch.plugin(published)["config"] == {"init_delay_s": 0}
    screenshot(admin, "plugin")


def test_calling_it_counts_the_call(admin: Any, published: str) -> None:
    from playwright.sync_api import expect

    admin.goto(f"/ui/plugins/{published}")
    expect(admin.locator("#call-count")).to_have_text("0")
    admin.select_option("#call-point", "analyzer")
    admin.fill("#call-input", json.dumps({"text": "hello from the browser"}))
    admin.click("#call button[type=submit]")
    result = admin.locator("#call-result")
    expect(result).to_contain_text("The call succeeded")
    expect(result).to_contain_text("hello from the browser")
    admin.reload()
    expect(admin.locator("#call-count")).to_have_text("1")
    expect(admin.locator("#history")).to_contain_text("install")
    screenshot(admin, "plugin-called")


def calls_sampled(orch: OrchestratorProcess, plugin_id: str) -> int:
    series = orch.client.get(f"/v1/plugins/{plugin_id}/usage", params={"since": "-1h"}).json()
    return sum(p["calls_in_step"] or 0 for p in series["series"]["points"])


def drawn_chart(page: Any, selector: str) -> Any:
    """The chart's SVG once ``ui.js`` has drawn it with the vendored renderer."""
    from playwright.sync_api import expect

    slot = page.locator(f"{selector} .chart-slot")
    expect(slot).to_have_attribute("data-drawn", "1")
    svg = slot.locator("svg").first
    expect(svg).to_be_visible()
    return slot


def test_the_call_shows_on_its_chart(admin: Any, orch: OrchestratorProcess, published: str) -> None:
    wait_until(lambda: calls_sampled(orch, published) >= 1, timeout_s=30)
    admin.goto(f"/ui/plugins/{published}")
    slot = drawn_chart(admin, "#chart-calls")
    spec = json.loads(slot.get_attribute("data-vega-spec"))
    ok = sum(v["value"] for v in spec["data"]["values"] if v["series"] == "ok")
    assert ok >= 1, spec["data"]["values"]
    # Vega draws each bar as a path in the marks group: the call is a bar with a height.
    bars = slot.locator("g.mark-rect path")
    assert bars.count() >= 1
    heights = [bars.nth(i).bounding_box()["height"] for i in range(bars.count())]
    assert max(heights) > 1, heights
    drawn_chart(admin, "#chart-memory")
    screenshot(admin, "plugin-charts")
    assert admin.console.errors == [], admin.console.errors


def test_the_dashboard_draws_through_a_visualization_plugin(
    admin: Any, orch: OrchestratorProcess, published: str
) -> None:
    from playwright.sync_api import expect

    chart_plugin = "com.example.bar-chart"
    r = orch.install_dir(REPO / "examples" / "bar-chart")
    assert r.status_code == 201, r.text
    try:
        assert orch.client.post(f"/v1/plugins/{chart_plugin}/enable").status_code == 200
        orch.wait_state(chart_plugin, "ACTIVE", timeout_s=60)
        admin.goto("/ui/analytics")
        expect(admin.locator(f'#totals tr[data-plugin="{published}"]')).to_be_visible()
        drawn_chart(admin, "#chart-calls")
        admin.select_option("#viz-plugin", chart_plugin)
        admin.select_option("#viz-dataset", "calls")
        admin.click("#viz-draw")
        plugin_chart = drawn_chart(admin, "#viz-result")
        spec = json.loads(plugin_chart.get_attribute("data-vega-spec"))
        assert {"category": published, "value": calls_sampled(orch, published)} in spec["data"][
            "values"
        ]
        assert plugin_chart.locator("g.mark-rect path").count() >= 1
        screenshot(admin, "analytics")
        assert admin.console.dialogs == [] and admin.console.errors == [], admin.console.errors
    finally:
        orch.client.post(f"/v1/plugins/{chart_plugin}/disable")  # when it got that far
        assert orch.client.delete(f"/v1/plugins/{chart_plugin}").status_code == 204


def test_a_viewer_cannot_install_or_change_anything(
    browser: Any, orch: OrchestratorProcess, published: str
) -> None:
    from playwright.sync_api import expect

    viewer = orch.client.post("/v1/tokens", json={"name": "looker", "role": "viewer"}).json()
    page = open_page(browser, orch, viewer["token"])
    try:
        expect(page.locator(".who .role")).to_have_text("viewer")
        row = page.locator(f'tr[data-plugin="{published}"]')
        expect(row).to_contain_text("ACTIVE")
        assert row.locator("button").count() == 0
        page.goto("/ui/marketplace")
        expect(page.locator(f'.card[data-plugin="{published}"]')).to_be_visible()
        assert page.get_by_role("link", name="Install").count() == 0
        page.goto(f"/ui/plugins/{published}")
        expect(page.locator("#history")).to_be_visible()
        assert page.locator("#plugin-actions, #call").count() == 0
        screenshot(page, "plugin-as-viewer")

        csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
        forged = page.request.post(f"/ui/plugins/{published}/disable", form={"csrf_token": csrf})
        assert forged.status == 403 and "needs operator" in forged.text()
        no_token = page.request.post(f"/ui/plugins/{published}/disable", form={})
        assert no_token.status == 403
        install = page.request.post(
            f"/ui/marketplace/{published}/install", form={"csrf_token": csrf}
        )
        assert install.status == 403
        assert page.request.get(f"/ui/marketplace/{published}/install").status == 403
        assert orch.plugin(published)["state"] == "ACTIVE"
        assert page.console.csp_violations() == []
    finally:
        page.context.close()


def test_replaying_a_dead_letter(
    admin: Any, orch: OrchestratorProcess, receiver: Receiver, webhook: str, published: str
) -> None:
    from playwright.sync_api import expect

    def dead() -> int:
        hook = orch.client.get(f"/v1/webhooks/{webhook}").json()
        return int(hook["deliveries"]["dead"])

    wait_until(lambda: dead() > 0, timeout_s=60)
    receiver.behave("/hook", status=200)
    admin.goto("/ui/webhooks")
    admin.locator("#webhooks a", has_text="/hook").click()
    admin.wait_for_url(f"**/ui/webhooks/{webhook}")
    expect(admin.locator("#deliveries")).to_contain_text("dead")
    wait_until(lambda: orch.client.get(f"/v1/webhooks/{webhook}").json()["status"] == "paused")
    admin.reload()
    expect(admin.locator("#webhook-state")).to_have_text("paused")
    screenshot(admin, "webhook")
    admin.click("#webhook-status button")
    expect(admin.locator(".flash-ok")).to_contain_text("is active")
    admin.click("#replay-dead")
    expect(admin.locator(".flash-ok")).to_contain_text("Queued")
    wait_until(lambda: dead() == 0, timeout_s=30)
    wait_until(
        lambda: orch.client.get(f"/v1/webhooks/{webhook}").json()["deliveries"]["delivered"] > 0,
        timeout_s=60,
    )
    admin.goto("/ui/webhooks")
    screenshot(admin, "webhooks")


def test_events_audit_and_tokens_pages(
    admin: Any, orch: OrchestratorProcess, published: str
) -> None:
    from playwright.sync_api import expect

    admin.goto("/ui/events?type=uitest.*")
    expect(admin.locator("#no-events")).to_be_visible()
    admin.wait_for_function("document.querySelector('#event-stream') !== null")
    admin.wait_for_timeout(500)  # the stream is open
    r = orch.client.post("/v1/events", json={"type": "uitest.live", "subject": "<b>x</b>"})
    assert r.status_code == 201, r.text
    live = admin.locator("#event-list .event", has_text="uitest.live")
    expect(live).to_be_visible()  # arrived without a reload
    expect(live).to_contain_text("<b>x</b>")  # as text, escaped
    expect(admin.locator("#no-events")).to_be_hidden()

    admin.goto("/ui/events?type=plugin.*")
    expect(admin.locator("#event-list .event").first).to_be_visible()
    expect(admin.locator("#event-list")).to_contain_text(published)
    screenshot(admin, "events")

    admin.goto("/ui/audit")
    expect(admin.locator("h1")).to_have_text("Audit log")
    screenshot(admin, "audit")

    admin.goto("/ui/tokens")
    admin.fill("#t-name", "made-in-the-ui")
    admin.select_option("#t-role", "operator")
    admin.click("form[action='/ui/tokens'] button[type=submit]")
    expect(admin.locator("#new-token .token")).to_contain_text("smt_")
    expect(admin.locator("#tokens")).to_contain_text("made-in-the-ui")
    screenshot(admin, "tokens")


def test_editing_its_configuration_and_the_forms_pages(
    admin: Any, orch: OrchestratorProcess, published: str, webhook: str
) -> None:
    from playwright.sync_api import expect

    admin.goto(f"/ui/plugins/{published}")
    admin.click("#edit-config")
    admin.wait_for_url(f"**/ui/plugins/{published}/config")
    field = admin.get_by_label("init_delay_s")
    expect(field).to_have_value("0")
    field.fill("-5")
    admin.click("#config-submit")
    expect(admin.locator(".field-error").first).to_contain_text("minimum of 0")
    screenshot(admin, "plugin-config-invalid")
    admin.get_by_label("init_delay_s").fill("0.5")
    admin.click("#config-submit")
    admin.wait_for_url(f"**/ui/plugins/{published}")
    expect(admin.locator(".flash-ok")).to_be_visible()
    assert orch.plugin(published)["config"] == {"init_delay_s": 0.5}
    for path, name in (
        (f"/ui/plugins/{published}/limits", "plugin-limits"),
        ("/ui/webhooks/new", "webhook-new"),
        (f"/ui/webhooks/{webhook}/edit", "webhook-edit"),
        (f"/ui/plugins/{published}/secrets", "plugin-secrets"),
        ("/ui/trust", "trust"),
    ):
        answer = admin.goto(path)
        assert answer.status == 200, path
        screenshot(admin, name)


def test_pages_fit_a_phone(browser: Any, orch: OrchestratorProcess, published: str) -> None:
    page = open_page(browser, orch, TOKEN, viewport=PHONE)
    try:
        for path, name in (
            ("/ui/plugins", "phone-plugins"),
            ("/ui/marketplace", "phone-marketplace"),
            (f"/ui/plugins/{published}", "phone-plugin"),
            (f"/ui/marketplace/{published}", "phone-catalog-plugin"),
            ("/ui/analytics", "phone-analytics"),
            ("/ui/webhooks/new", "phone-webhook-new"),
            (f"/ui/plugins/{published}/config", "phone-plugin-config"),
            ("/ui/trust", "phone-trust"),
        ):
            page.goto(path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
            screenshot(page, name)
        assert page.console.csp_violations() == []
    finally:
        page.context.close()


def test_disabling_it(admin: Any, orch: OrchestratorProcess, published: str) -> None:
    from playwright.sync_api import expect

    admin.goto(f"/ui/plugins/{published}")
    admin.click("button[data-action=disable]")
    expect(admin.locator(".flash-ok")).to_contain_text(f"{published} disabled")
    expect(admin.locator(".state-box .state")).to_have_text("LOADED")
    assert orch.plugin(published)["state"] == "LOADED"
    screenshot(admin, "plugin-disabled")
