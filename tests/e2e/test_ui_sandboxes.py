"""The Sandboxes page in real headless Chromium against a real server holding sandboxes on runc."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import shot, sign_in
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_open_sandboxes_are_listed_and_removed(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.get_by_role("link", name="Sandboxes").click()
    page.wait_for_url("**/ui/sandboxes")
    expect(page.get_by_role("cell", name="No sandboxes open.")).to_be_visible()
    kept = json.loads(server.cli("sandbox", "create", "--json", "--timeout", "900").stdout)
    gone = json.loads(server.cli("sandbox", "create", "--json", "--memory", "256Mi", "--network").stdout)
    assert server.cli("sandbox", "exec", gone["id"], "--", "true").returncode == 0
    page.reload()
    for sb in (kept, gone):
        row = page.locator(f"tr[data-sandbox='{sb['id']}']")
        expect(row).to_contain_text("running")
        expect(row).to_contain_text("python")
        expect(row).to_contain_text(sb["created_at"][:10])
    expect(page.locator(f"tr[data-sandbox='{kept['id']}']")).to_contain_text("(900 s idle)")
    expect(page.locator(f"tr[data-sandbox='{gone['id']}']")).to_contain_text("256 MiB, 1 CPU, network")
    expect(page.get_by_role("link", name="Sandboxes")).to_have_attribute("aria-current", "page")
    shot(page, "sandboxes")
    page.get_by_role("button", name=f"Remove {gone['id']}").click()
    page.wait_for_url("**/ui/sandboxes?removed=*")
    expect(page.get_by_role("status")).to_have_text(f"Removed {gone['id']}.")
    expect(page.locator(f"tr[data-sandbox='{gone['id']}']")).to_have_count(0)
    expect(page.locator(f"tr[data-sandbox='{kept['id']}']")).to_have_count(1)
    shown = server.get(f"/v1/sandboxes/{gone['id']}")
    assert (shown["status"], shown["reason"]) == ("removed", "removed on request")
    assert "Traceback" not in page.content()


def test_removing_another_workspaces_sandbox_is_a_plain_error(page: Page, server: Server) -> None:
    sign_in(page, server)
    # Back on the Sandboxes page (a reload does not send the form again), with the sentence.
    page.goto("/ui/settings")  # the workspace the page's forms are for (its forms say it)
    workspace = page.locator("input[name=workspace]").first.get_attribute("value")
    assert workspace
    response = page.request.post(
        "/ui/sandboxes/sbx_nothere00/remove", form={"workspace": workspace}, max_redirects=0
    )
    assert response.status == 303
    page.goto(response.headers["location"])
    expect(page.get_by_role("alert")).to_contain_text("No sandbox 'sbx_nothere00' in this workspace.")
    expect(page.get_by_role("heading", name="Sandboxes")).to_be_visible()
