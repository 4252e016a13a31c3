"""Two tabs of one browser, signed in to two workspaces one after the other (the sign-in cookie is
shared): a page rendered for the first one changes nothing of the second, in real headless
Chromium against a real server."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import sign_in
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_tab_left_on_another_workspaces_page_changes_nothing(page: Page, server: Server) -> None:
    """Found by a tester: tab 1 showed Settings of workspace default; tab 2 signed in to another
    workspace; Delete next to API_KEY in tab 1 deleted the other workspace's API_KEY, silently."""
    with server.api() as admin:
        theirs = admin.post("/v1/workspaces", json={"name": "beta"}).json()["token"]
        assert admin.put("/v1/secrets/API_KEY", json={"value": "mine"}).status_code == 200
    other = {"Authorization": f"Bearer {theirs}"}
    with server.api() as api:
        assert api.put("/v1/secrets/API_KEY", json={"value": "theirs"}, headers=other).status_code == 200
    sign_in(page, server)
    page.goto("/ui/settings")
    new_env = page.context.new_page()  # a second page of tab 1's workspace: a script's change
    new_env.goto("/ui/environments/new")
    second = page.context.new_page()  # tab 2 signs in to beta
    second.goto("/ui/login")
    second.get_by_label("API token").fill(theirs)
    second.get_by_role("button", name="Sign in").click()
    second.wait_for_url("**/ui/environments")
    expect(second.locator("header")).to_contain_text("workspace beta")

    said = "This page was for workspace default; you are now signed in to workspace beta, "
    said += "so nothing was changed."
    page.get_by_role("button", name="Delete API_KEY").click()
    expect(page.get_by_role("alert")).to_have_text(said)
    expect(page.locator("main")).to_contain_text("Reload the page.")
    new_env.get_by_label("Name", exact=True).fill("made-in-tab-one")
    new_env.get_by_role("button", name="Create and build").click()
    expect(new_env.locator("#create-error")).to_have_text(f"{said} Reload the page.")
    with server.api() as api:
        assert [s["name"] for s in api.get("/v1/secrets").json()] == ["API_KEY"]
        assert [s["name"] for s in api.get("/v1/secrets", headers=other).json()] == ["API_KEY"]
        for headers in ({}, other):
            names = [e["name"] for e in api.get("/v1/environments", headers=headers).json()]
            assert "made-in-tab-one" not in names
    # Reloaded, the page is beta's and acts on beta.
    page.goto("/ui/settings")
    page.get_by_role("button", name="Delete API_KEY").click()
    expect(page.get_by_role("status")).to_have_text("Secret API_KEY deleted.")
    with server.api() as api:
        assert api.get("/v1/secrets", headers=other).json() == []
        assert [s["name"] for s in api.get("/v1/secrets").json()] == ["API_KEY"]
