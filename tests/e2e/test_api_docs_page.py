"""The API's reference page, /docs, in real headless Chromium against a real server, with every
other origin blocked (as on a machine without internet): the operations are shown, nothing was
asked of another site, and the page's policy blocked nothing Swagger UI needs."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from tests.e2e.conftest import shot
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_docs_show_the_operations_without_other_sites(page: Page, server: Server) -> None:
    ours = urlsplit(server.url).netloc
    elsewhere: list[str] = []

    def only_ours(route: Route) -> None:
        if urlsplit(route.request.url).netloc == ours:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_ours)
    refused: list[str] = []  # what the page's Content-Security-Policy blocked, as Chromium says it
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto("/docs")
    operation = page.locator(".opblock-summary", has_text="/v1/environments").first
    expect(operation).to_be_visible()
    assert page.locator(".opblock").count() > 20  # the whole API, not one stray route
    operation.click()  # an operation opens: its parameters and answers are drawn
    expect(page.locator(".opblock-body").first).to_be_visible()
    shot(page, "api-docs")
    assert elsewhere == []
    assert refused == []
