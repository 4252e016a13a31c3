"""The server's log (orch/log_setup.py): orch's own INFO lines, not a line per request the HTTP
client library sends (the sandbox relay's calls to a node named each sandbox in the log)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from orch import log_setup


@pytest.fixture
def restored() -> Iterator[None]:
    before = {name: logging.getLogger(name).level for name in log_setup.QUIET}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restored")
def test_the_http_clients_request_lines_are_not_logged_but_orchs_own_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log_setup.configure()
    with caplog.at_level(logging.INFO):
        with httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200))) as client:
            assert client.get("http://node.test/v1/sandboxes/sbx_secret/exec").status_code == 200
        logging.getLogger("orch.workers.runs").info("run started")
    assert [r.getMessage() for r in caplog.records] == ["run started"]
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
