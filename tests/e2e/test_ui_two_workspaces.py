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
    env_page = page.context.new_page()  # and an environment's page, whose Rebuild is a script's
    env_page.goto("/ui/environments/python-ml")
    second = page.context.new_page()  # tab 2 signs in to beta
    second.goto("/ui/login")
    second.get_by_label("API token").fill(theirs)
    second.get_by_role("button", name="Sign in").click()
    second.wait_for_url("**/ui/environments")
    expect(second.locator("header")).to_contain_text("workspace beta")

    now = "you are now signed in to workspace beta, so nothing was changed."
    # The server names the form's workspace only to a token that may see it (beta's is a plain
    # one: the form's field is the browser's to send); the page's script names its own page's.
    page.get_by_role("button", name="Delete API_KEY").click()
    # Back on Settings, as it is now (beta's): a reload shows it again, it does not send the form
    # again (the answer was a page at the form's URL, whose reload deleted the secret once tab 2
    # signed in back; found by a tester).
    page.wait_for_url("**/ui/settings?failed=*")
    expect(page.get_by_role("alert")).to_have_text(
        f"This page was for another workspace; {now} "
        "This page now shows workspace beta; to change the other workspace, sign in to it again."
    )
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("This page was for another workspace;")
    assert posts == []
    new_env.get_by_label("Name", exact=True).fill("made-in-tab-one")
    new_env.get_by_role("button", name="Create and build").click()
    said = f"This page was for workspace default; {now}"
    expect(new_env.locator("#create-error")).to_have_text(f"{said} Reload the page.")
    dialogs: list[str] = []
    env_page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    env_page.get_by_role("button", name="Rebuild").click()  # said on the page, not in an alert()
    expect(env_page.get_by_role("alert")).to_have_text(f"{said} Reload the page.")
    assert dialogs == []
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
