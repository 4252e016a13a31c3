"""A service's page in real headless Chromium against a real server on real Podman: its facts
(replicas, what it should be, each replica's line) follow a stop and a restart made elsewhere,
without a reload, as its state and uptime do."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import shot, sign_in
from tests.integration.conftest import Server
from tests.integration.test_runs import write
from tests.integration.test_services import HTTP_SERVICE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def replicas_text(svc: dict) -> str:  # type: ignore[type-arg]
    """The Replicas cell as the page says it, from the API's view of the service."""
    running = sum(1 for r in svc["replicas"] if r["state"] == "running")
    return f"{running} of {svc['desired_replicas']} running"


def wait_for_api(server: Server, name: str, text: str) -> dict:  # type: ignore[type-arg]
    """The service as the API shows it once its Replicas cell would say `text` (at most 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        svc = server.get(f"/v1/services/{name}")
        if replicas_text(svc) == text:
            return svc
        assert time.monotonic() < deadline, f"the API says {replicas_text(svc)!r}, waited for {text!r}"
        time.sleep(0.5)


def test_a_service_page_shows_its_replicas_after_a_stop_and_restart_elsewhere(
    page: Page, server: Server, tmp_path: Path
) -> None:
    write(tmp_path / "pair", {"main.py": HTTP_SERVICE, "orch.yaml": "replicas: 2\n"})
    res = server.cli("service", "deploy", str(tmp_path / "pair"), "--name", "pair")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for_api(server, "pair", "2 of 2 running")
    sign_in(page, server)
    page.goto("/ui/services/pair")
    facts = page.locator("dl.facts")
    replicas = page.locator("#service-replicas")
    lines = facts.locator("li")  # a line each, as there are several
    expect(replicas).to_contain_text("2 of 2 running")
    expect(lines).to_have_count(2)
    expect(facts).to_contain_text("(should be running)")
    # Stopped in another window (the CLI): no reload from here on. The state beside it changed
    # and the count stayed "2 of 2 running" until a reload (found by a tester).
    res = server.cli("service", "stop", "pair")
    assert res.returncode == 0, res.stdout + res.stderr
    stopped = wait_for_api(server, "pair", "0 of 2 running")
    expect(page.locator("#service-state")).to_have_text(stopped["state"], timeout=60_000)
    expect(replicas).to_contain_text("0 of 2 running", timeout=60_000)
    expect(facts).to_contain_text("(should be stopped)")
    expect(lines).to_have_count(len(stopped["replicas"]))
    shot(page, "service-stopped")
    # And started again elsewhere: both replicas come back, each on a line of its own.
    res = server.cli("service", "restart", "pair")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for_api(server, "pair", "2 of 2 running")
    expect(replicas).to_contain_text("2 of 2 running", timeout=60_000)
    expect(facts).to_contain_text("(should be running)")
    expect(lines).to_have_count(2)
    for line in lines.all():
        expect(line).to_contain_text("running")


def test_a_service_pages_facts_follow_on_their_own_and_fit_a_phone(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    """Found by a tester: the state followed the log's long poll (up to 10 s apart) and the
    replicas and uptime other answers, so the page said "running" beside "1: starting", and the
    uptime jumped in 10 s steps. The facts come from one answer, asked on their own cadence, and
    the uptime ticks. And at 360 px the page scrolled sideways (its URL, its image's name)."""
    name = "a-service-whose-name-is-long-enough-to-push-a-phone-page-wide"
    write(tmp_path / "long", {"main.py": HTTP_SERVICE, "orch.yaml": "replicas: 2\n"})
    res = server.cli("service", "deploy", str(tmp_path / "long"), "--name", name)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for_api(server, name, "2 of 2 running")
    context = browser.new_context(base_url=server.url, viewport={"width": 360, "height": 740})
    page = context.new_page()
    try:
        sign_in(page, server)
        page.goto(f"/ui/services/{name}")
        replicas = page.locator("#service-replicas")
        expect(replicas).to_contain_text("2 of 2 running")
        page.evaluate("window.scrollTo(1000, 0)")
        assert page.evaluate("window.scrollX") == 0
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        # The log's long poll gets no answer from here on: the facts follow all the same.
        page.route("**/v1/services/*/logs*", lambda route: route.abort("connectionrefused"))
        uptime = page.locator("#service-uptime")
        expect(uptime).to_have_text(re.compile(r"^\d+ s$"))
        for _ in range(3):  # it ticks each second, not when an answer to the log's poll comes
            seen = uptime.text_content() or ""
            expect(uptime).not_to_have_text(seen, timeout=5_000)
        res = server.cli("service", "stop", name)
        assert res.returncode == 0, res.stdout + res.stderr
        stopped = wait_for_api(server, name, "0 of 2 running")
        expect(page.locator("#service-state")).to_have_text(stopped["state"], timeout=30_000)
        expect(replicas).to_have_text("0 of 2 running", timeout=30_000)
        expect(uptime).to_have_text("")
    finally:
        context.close()
        server.cli("service", "delete", name, "--yes")
