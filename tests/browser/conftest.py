"""Browser tests: Debian's Chromium, driven by Playwright, against a real gateway
(`live_api`) and the session worker. Playwright never downloads a browser here: the
Makefile's setup installs the `chromium` package when /usr/bin/chromium is missing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path(os.environ.get("STILLHOUSE_CHROMIUM", "/usr/bin/chromium"))
# No GPU, no sandbox (containers run as root), and none of Chromium's own traffic
# (updates, sync, QUIC probes), so a run is the same offline.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}

Shoot = Callable[..., Path]


# Package scope: Playwright's sync API keeps an asyncio loop running while it is up, and
# later tests (asyncio.run in tests/core) must not start inside it.
@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"No Chromium at {CHROMIUM}: install Debian's package (`apt-get install chromium`, "
            "which `make test` does) or point STILLHOUSE_CHROMIUM at one."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser context (no stored key) at desktop width."""
    context = chromium.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"the dashboard raised in the browser: {errors}"


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $STILLHOUSE_ARTIFACTS, else a pytest temporary folder."""
    folder = Path(os.environ.get("STILLHOUSE_ARTIFACTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


@pytest.fixture
def shoot(artifacts: Path) -> Shoot:
    """shoot(page, "name", full_page=True): a PNG under the artifacts folder, its path."""

    def take(page: Page, name: str, full_page: bool = True) -> Path:
        path = artifacts / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        print(f"screenshot: {path}")
        return path

    return take


def key_of(auth: dict[str, str]) -> str:
    return auth["Authorization"].removeprefix("Bearer ")


def log_in(page: Page, url: str, key: str) -> None:
    """Open the dashboard and connect with `key` through the login form."""
    page.goto(url + "/")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Connect").click()
    page.get_by_role("navigation", name="Main").wait_for()
