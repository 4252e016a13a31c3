"""A server that accepts connections and then says nothing (stopped with SIGSTOP: the kernel still
accepts them; so does a hung, overloaded or black-holed one), in real headless Chromium: the
pages' requests have a deadline, past which they say what they say when the server refuses, and
a button whose request is pending sends nothing more. The page's clock is Playwright's, moved on
past the deadlines, so the test waits for none of them."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import shot, sign_in
from tests.integration.conftest import Server
from tests.integration.test_runs import write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOT_ANSWERING = "The server is not answering; trying again…"
NO_ANSWER = "The server is not answering. Check that orch server is running, then try again."
BUTTON_PAST = "00:16"  # past a request's deadline (app.js, ANSWER_WITHIN: 15 s)
LONG_POLL_PAST = "00:21"  # past a live view's long poll's (app.js, LONG_POLL_WITHIN: 20 s)
TICKER = "import time\nfor i in range(16):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)\n"


@contextmanager
def frozen(server: Server) -> Iterator[None]:
    """The server's process stopped (it accepts connections, answers none), then resumed."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def test_a_button_on_a_hung_server_says_so_and_a_second_click_sends_nothing(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """Found by a tester: with the server frozen, Run showed nothing, forever, and stayed enabled;
    three clicks made three runs once it woke."""
    assert server.cli("publish", str(write(tmp_path / "ticker", {"main.py": TICKER}))).returncode == 0
    page.clock.install()
    sign_in(page, server)
    page.goto("/ui/agents/ticker")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url}") if "/ui/static/" not in r.url else None)
    button = page.get_by_role("button", name="Run ticker")
    error = page.locator("#run-error")
    with frozen(server):
        button.click()
        expect(button).to_be_disabled()
        expect(button).to_have_attribute("aria-busy", "true")
        form = page.locator("form[data-run-form]")
        for _ in range(2):  # pressed again (Enter submits the form too): nothing is sent
            form.evaluate("f => f.requestSubmit()")
        page.clock.fast_forward(BUTTON_PAST)
        expect(error).to_have_text(NO_ANSWER)
        expect(button).to_be_enabled()
        shot(page, "run-button-server-hung")
        # One request in all, the first's (the page's workspace, asked before the run): no run
        # was asked for, and no second click's request.
        assert len(sent) == 1 and sent[0].endswith("/ui/workspace"), sent
    button.click()  # the server answers again
    page.wait_for_url("**/ui/runs/run_*")
    with server.api() as api:
        assert len(api.get("/v1/runs").json()) == 1


def test_a_run_page_on_a_hung_server_says_so_and_goes_on_once_it_answers(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """Found by a tester: a run's page with the server frozen for 15 s never said it was not
    answering (its long poll waited forever), though it did for a server stopped for good."""
    assert server.cli("publish", str(write(tmp_path / "ticker", {"main.py": TICKER}))).returncode == 0
    page.clock.install()
    sign_in(page, server)
    page.goto("/ui/agents/ticker")
    page.get_by_role("button", name="Run ticker").click()
    page.wait_for_url("**/ui/runs/run_*")
    output = page.locator("[data-run-log]")
    expect(output).to_contain_text("tick 0")
    connection = page.locator("[data-connection]")
    with frozen(server):
        # A poll answered just before the stop may have started the next after the clock moved:
        # moved again, a few times at most.
        for _ in range(5):
            page.clock.fast_forward(LONG_POLL_PAST)
            try:
                expect(connection).to_have_text(NOT_ANSWERING, timeout=5_000)
                break
            except AssertionError:
                continue
        expect(connection).to_have_text(NOT_ANSWERING)
        assert "abort" not in output.text_content().lower()
        shot(page, "run-server-hung")
    # It asks again and goes on from where it was: no reload, nothing twice.
    expect(output).to_contain_text("tick 15", timeout=60_000)
    expect(page.locator("[data-field=status]")).to_have_text("succeeded", timeout=60_000)
    expect(connection).to_be_hidden()
    assert output.text_content().count("tick 3\n") == 1
