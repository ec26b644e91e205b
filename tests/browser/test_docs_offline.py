"""The API reference renders in a real browser with the network blocked: Debian's
Chromium, driven by Playwright, against a real gateway (`live_api`). Every request for a
host other than 127.0.0.1 is aborted and recorded, so a page that needs a CDN fails here.

Screenshots land in $STILLHOUSE_ARTIFACTS (else a pytest temporary folder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect


@pytest.fixture
def offline(chromium: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page that can reach 127.0.0.1 only, and the list of URLs it was refused."""
    context: BrowserContext = chromium.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, refused
    context.close()
    assert not errors, f"the page raised in the browser: {errors}"


def _operations(live_api: str) -> set[str]:
    paths = httpx.get(f"{live_api}/openapi.json", timeout=10).json()["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item}


def test_swagger_ui_renders_every_operation_offline(
    live_api: str, offline: tuple[Page, list[str]], artifacts: Path
) -> None:
    page, refused = offline
    page.goto(f"{live_api}/docs")
    expect(page.locator(".information-container h1")).to_contain_text("Stillhouse")
    create = page.locator(".opblock-post", has_text="/v1/jobs").first
    expect(create.locator(".opblock-summary-method")).to_have_text("POST")
    summaries = page.locator(".opblock-summary").evaluate_all(
        """nodes => nodes.map(n =>
            n.querySelector('.opblock-summary-method').textContent + ' ' +
            n.querySelector('.opblock-summary-path').getAttribute('data-path'))"""
    )
    # Swagger UI breaks long paths with zero-width spaces after each slash.
    rendered = {s.replace("\u200b", "") for s in summaries}
    assert "POST /v1/jobs" in rendered
    assert rendered == _operations(live_api)
    expect(page.get_by_role("button", name="Authorize")).to_be_visible()
    page.screenshot(path=str(artifacts / "api-docs.png"))

    # The job operation opens on its example body and its declared errors.
    page.locator("#operations-jobs-create_job_v1_jobs_post .opblock-summary-control").click()
    operation = page.locator("#operations-jobs-create_job_v1_jobs_post")
    expect(operation.locator(".body-param__example").first).to_contain_text("cnn8-from-cnn64")
    expect(operation.locator("tr.response[data-code='422']")).to_contain_text("invalid_request")
    operation.screenshot(path=str(artifacts / "api-docs-create-job.png"))
    assert refused == [], f"/docs asked for hosts beyond this server: {refused}"


def test_redoc_renders_offline(
    live_api: str, offline: tuple[Page, list[str]], artifacts: Path
) -> None:
    page, refused = offline
    page.goto(f"{live_api}/redoc")
    expect(page.locator("h1").first).to_contain_text("Stillhouse")
    expect(page.locator("h2", has_text="Create Job").first).to_be_visible()
    page.screenshot(path=str(artifacts / "api-redoc.png"))
    assert refused == [], f"/redoc asked for hosts beyond this server: {refused}"
