"""Secrets on the Settings page, in real headless Chromium against a real server: set, replace and
delete them with the forms; the page never shows a value, and the CLI sees the same secrets."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import shot, sign_in
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VALUE = "sk-from-the-browser-9Qz"


def test_set_replace_and_delete_secrets_on_the_settings_page(page: Page, server: Server) -> None:
    assert server.cli("secret", "set", "FROM_CLI", "--value", "cli-value-3x").returncode == 0
    sign_in(page, server)
    page.get_by_role("link", name="Settings").click()
    table = page.locator("#secrets-table")
    expect(table).to_contain_text("FROM_CLI")

    page.get_by_label("Secret name").fill("OPENAI_API_KEY")
    page.get_by_label("Secret value").fill(VALUE)
    page.get_by_role("button", name="Save secret").click()
    expect(page.get_by_role("status")).to_have_text("Secret OPENAI_API_KEY saved.")
    expect(table).to_contain_text("OPENAI_API_KEY")
    shot(page, "settings-secrets")
    assert VALUE not in page.content() and "cli-value-3x" not in page.content()
    listed = json.loads(server.cli("secret", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["FROM_CLI", "OPENAI_API_KEY"]
    first = next(s for s in listed if s["name"] == "OPENAI_API_KEY")

    # The same name again replaces the value: one row, a later update time.
    page.get_by_label("Secret name").fill("OPENAI_API_KEY")
    page.get_by_label("Secret value").fill(VALUE + "-2")
    page.get_by_role("button", name="Save secret").click()
    expect(page.get_by_role("status")).to_have_text("Secret OPENAI_API_KEY saved.")
    again = {s["name"]: s for s in json.loads(server.cli("secret", "list", "--json").stdout)}
    assert again["OPENAI_API_KEY"]["updated_at"] > first["updated_at"]
    assert again["OPENAI_API_KEY"]["created_at"] == first["created_at"]

    page.get_by_role("button", name="Delete FROM_CLI").click()
    expect(page.get_by_role("status")).to_have_text("Secret FROM_CLI deleted.")
    expect(table).not_to_contain_text("FROM_CLI")
    names = [s["name"] for s in json.loads(server.cli("secret", "list", "--json").stdout)]
    assert names == ["OPENAI_API_KEY"]


def test_a_refused_secret_is_a_sentence_and_changes_nothing(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.goto("/ui/settings")
    page.get_by_label("Secret name").fill("PATH")
    page.get_by_label("Secret value").fill(VALUE)
    page.get_by_role("button", name="Save secret").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "PATH is a variable that orch sets in every sandbox, so no secret can take its name."
    )
    assert VALUE not in page.content() and "Traceback" not in page.content()
    shot(page, "settings-secret-refused")
    # The browser's own check stops a name that is not a variable's before it is sent.
    page.goto("/ui/settings")
    page.get_by_label("Secret name").fill("lower-case")
    page.get_by_label("Secret value").fill(VALUE)
    page.get_by_role("button", name="Save secret").click()
    expect(page).to_have_url(server.url + "/ui/settings")
    assert json.loads(server.cli("secret", "list", "--json").stdout) == []
