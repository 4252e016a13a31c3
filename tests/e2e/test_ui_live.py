"""The pages' script in real headless Chromium against a real server: live views that ride out a
server that does not answer (the browser's requests are cut, as when the server is down), a run's
output in blocks that look the same live and after a reload, the fields' checks, and pages that
load with no error in the console."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect

from tests.e2e.conftest import shot, sign_in
from tests.integration.conftest import Server
from tests.integration.test_runs import write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOT_ANSWERING = "The server is not answering; trying again…"


def cut(route: Route) -> None:
    """The browser's request fails as with the server down: fetch rejects ("Failed to fetch")."""
    route.abort("connectionrefused")


def test_a_run_page_rides_out_a_server_that_does_not_answer(
    page: Page, server: Server, tmp_path: Path
) -> None:
    ticker = "import time\nfor i in range(16):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)\n"
    assert server.cli("publish", str(write(tmp_path / "ticker", {"main.py": ticker}))).returncode == 0
    sign_in(page, server)
    page.goto("/ui/agents/ticker")
    page.get_by_role("button", name="Run ticker").click()
    page.wait_for_url("**/ui/runs/run_*")
    output = page.locator("[data-run-log]")
    expect(output).to_contain_text("tick 0")
    page.route("**/v1/runs/*/logs*", cut)
    connection = page.locator("[data-connection]")
    expect(connection).to_have_text(NOT_ANSWERING)
    assert "Failed to fetch" not in output.text_content()
    shot(page, "run-server-gone")
    page.unroute("**/v1/runs/*/logs*", cut)
    # It asks again (at most 5 s apart) and goes on from where it was: no reload.
    expect(output).to_contain_text("tick 15", timeout=60_000)
    expect(page.locator("[data-field=status]")).to_have_text("succeeded", timeout=60_000)
    expect(connection).to_be_hidden()
    assert output.text_content().count("tick 3\n") == 1  # nothing twice
    expect(page.locator("[data-run-cancel]")).to_be_hidden()  # ended: nothing to cancel


def test_a_runs_output_is_shown_the_same_live_and_after_a_reload(
    page: Page, server: Server, tmp_path: Path
) -> None:
    agent = (
        "import sys, time\n"
        "print('first out', flush=True)\n"
        "print('nul\\x00 bel\\x07 esc\\x1b del\\x7f', flush=True)\n"  # control characters
        "print('\\x1b[31mRED\\x1b[0m on stderr', file=sys.stderr, flush=True)\n"
        "time.sleep(1)\n"
        "print('second out', flush=True)\n"
        "sys.stdout.write('x' * (1200 * 1024))\n"  # past the 1 MiB the store keeps
    )
    assert server.cli("publish", str(write(tmp_path / "mixed", {"main.py": agent}))).returncode == 0
    sign_in(page, server)
    page.goto("/ui/agents/mixed")
    page.get_by_role("button", name="Run mixed").click()
    page.wait_for_url("**/ui/runs/run_*")
    expect(page.locator("[data-field=status]")).to_have_text("succeeded", timeout=60_000)
    truncated = page.get_by_text("(output was cut at the 1 MiB limit per stream)")
    expect(truncated).to_be_visible()
    stderr = page.locator("[data-stream=stderr] pre")
    expect(stderr).to_have_text("RED on stderr\n")  # no escape sequences
    live = {s: page.locator(f"[data-stream={s}] pre").text_content() for s in ("log", "stdout", "stderr")}
    # Control characters as their pictures (a browser showed empty boxes), live and reloaded.
    assert live["stdout"].startswith("first out\nnul\u2400 bel\u2407 esc\u241b del\u2421\nsecond out\nxxx")
    shot(page, "run-streams")
    page.reload()
    expect(page.locator("[data-stream=stdout] pre")).to_have_text(live["stdout"])
    expect(stderr).to_have_text(live["stderr"])
    expect(page.locator("[data-stream=log] pre")).to_have_text(live["log"])
    expect(truncated).to_be_visible()
    expect(page.get_by_role("heading", name="stderr")).to_be_visible()


def test_new_environment_checks_the_name_and_rides_out_the_server(page: Page, server: Server) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, server)
    page.goto("/ui/environments/new")
    name = page.get_by_label("Name")
    name.fill("Not A Name")
    assert name.evaluate("el => el.validity.patternMismatch") is True
    name.fill("scraper-plus.2")
    assert name.evaluate("el => el.validity.valid") is True
    assert errors == []  # the pattern compiles (a bad one logs an error at each keystroke)

    findings = page.locator("#findings")
    expect(findings).to_contain_text("Dockerfile valid")
    page.route("**/v1/environments/validate", cut)
    page.get_by_label("Dockerfile (validated as you type)").fill(
        'FROM e2bdev/code-interpreter:latest\nCMD ["x"]\n'
    )
    expect(findings).to_have_text(NOT_ANSWERING)
    page.unroute("**/v1/environments/validate", cut)
    expect(findings).to_contain_text("line 2 CMD")  # checked again once it answers
    page.route("**/v1/environments", cut)
    page.get_by_role("button", name="Create and build").click()
    expect(page.locator("#create-error")).to_have_text(
        "The server is not answering. Check that orch server is running, then try again."
    )


def test_pages_load_without_errors_and_back_after_sign_out_shows_none(page: Page, server: Server) -> None:
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"{page.url}: {message.text}")

    page.on("console", console)
    page.on("response", lambda r: problems.append(f"{r.url}: {r.status}") if r.status == 404 else None)
    assert server.cli("secret", "set", "SHOWN_KEY", "--value", "v").returncode == 0
    sign_in(page, server)
    for path in (
        "/ui/environments",
        "/ui/environments/python",
        "/ui/environments/new",
        "/ui/agents",
        "/ui/runs",
        "/ui/services",
        "/ui/sandboxes",
        "/ui/settings",
    ):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    # No favicon.ico missing, nothing the pages' security policy blocked.
    assert problems == []
    expect(page.locator("#secrets-table")).to_contain_text("SHOWN_KEY")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    page.go_back()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert "SHOWN_KEY" not in page.content()


def test_a_page_signed_out_meanwhile_says_so_not_the_apis_advice(page: Page, server: Server) -> None:
    """Found by a tester: a live view whose sign-in went (Sign out in another window) showed the
    API's advice for scripts, "This request has no API token. Send 'Authorization: Bearer
    TOKEN'...", where a person reads that they must sign in again."""
    sign_in(page, server)
    page.goto("/ui/environments/new")
    page.context.clear_cookies()  # signed out in another window
    page.get_by_label("Dockerfile (validated as you type)").fill("FROM e2bdev/code-interpreter:latest\n")
    expect(page.locator("#findings")).to_have_text(
        "You are no longer signed in. Sign in again (reload this page), then try again."
    )


def test_the_menu_wraps_at_phone_width(browser: Browser, server: Server) -> None:
    """At 360 px the header was one line 820 px wide: Services, Sandboxes, Settings and Sign out
    were off-screen and every page scrolled sideways (found by a tester). Then the Sandboxes page
    with a sandbox open (its table's hidden Actions heading stuck out of its box, to 836 px) and
    an environment's page (its image's name) still did (found by a tester)."""
    created = server.cli("sandbox", "create", "--json")
    assert created.returncode == 0, created.stdout + created.stderr
    sandbox = json.loads(created.stdout)
    context = browser.new_context(base_url=server.url, viewport={"width": 360, "height": 640})
    page = context.new_page()
    try:
        sign_in(page, server)
        environment = f"/ui/environments/{sandbox['environment']['name']}"
        for path in (
            "/ui/runs",
            "/ui/services",
            "/ui/environments",
            "/ui/settings",
            "/ui/sandboxes",
            environment,
        ):
            page.goto(path)
            if path == "/ui/sandboxes":
                expect(page.locator(f"tr[data-sandbox='{sandbox['id']}']")).to_have_count(1)
            if path == environment:
                expect(page.locator("[data-field=image]")).to_contain_text(":")
            page.evaluate("window.scrollTo(1000, 0)")
            assert page.evaluate("window.scrollX") == 0, path
            assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
            for item in [
                *page.get_by_role("navigation", name="Main").get_by_role("link").all(),
                page.get_by_role("button", name="Sign out"),
            ]:
                box = item.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, (path, item)
        shot(page, "narrow-settings")
    finally:
        context.close()
