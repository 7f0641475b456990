"""Browser fixtures: Debian's Chromium (``/usr/bin/chromium``, installed by
``scripts/ensure-chromium.sh``) driven headless through Playwright's Python package; never a
browser Playwright downloads itself. Screenshots go to ``test-artifacts/screenshots/``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

CHROMIUM = os.environ.get("SUMMIT_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


def pytest_configure(config: pytest.Config) -> None:
    # Until pyproject.toml lists it, the marker is declared here (--strict-markers).
    config.addinivalue_line("markers", "browser: drives a real browser (Debian's Chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per module, closed afterwards."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh")
    with sync_playwright() as playwright:
        # As root (CI, containers) Chromium's own sandbox cannot start; the test pages are
        # the orchestrator's own.
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot in test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^a-z0-9_.-]+", "-", name.lower()) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path
