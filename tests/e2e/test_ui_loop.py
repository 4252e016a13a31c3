"""A managed loop's run page in Chromium: its model usage, and its events as a transcript with
each tool call folded over its result (the model is the scripted server on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import FLAGS, shot, sign_in  # noqa: F401
from tests.integration.conftest import Server
from tests.integration.test_loop_runs import loop_server, publish_loop
from tests.model_server import ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture


@pytest.fixture
def loop_page(browser: Browser, make_server, model_server: ModelServer) -> Iterator[tuple[Page, Server]]:  # type: ignore[no-untyped-def]
    server = loop_server(make_server, model_server)
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page, server
    context.close()


def test_a_loop_runs_page_shows_its_transcript_with_tool_calls_folded(
    loop_page: tuple[Page, Server], model_server: ModelServer, tmp_path: Path
) -> None:
    page, server = loop_page
    publish_loop(server, tmp_path, model_server)
    model_server.script(
        Reply(text="Reading the notes.", calls=[("bash", {"command": "cat notes.md"})]),
        Reply(text="The notes say orch was here."),
    )
    res = server.cli("run", "looper", "--input", '{"prompt": "what do the notes say?"}', "--json")
    run = json.loads(res.stdout)
    assert run["status"] == "succeeded", res.stdout + res.stderr

    sign_in(page, server)
    page.goto(f"/ui/runs/{run['id']}")
    expect(page.locator("[data-field=usage]")).to_have_text("2 calls, 20 tokens in, 10 out")
    transcript = page.locator("[data-run-transcript]")
    expect(transcript.locator(".turn-model").first).to_contain_text("Reading the notes.")
    tool = transcript.locator(".turn-tool details")
    expect(tool.locator("summary")).to_contain_text("bash cat notes.md ok")  # the command, as read
    output = tool.locator("pre")
    expect(output).to_be_hidden()  # folded
    tool.locator("summary").click()
    expect(output).to_have_text("orch was here\n")
    expect(transcript.locator(".turn-final")).to_have_text("The notes say orch was here.")
    shot(page, "run-transcript")
