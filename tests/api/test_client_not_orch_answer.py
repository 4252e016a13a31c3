"""A 200 answer whose body is not JSON (another web server, a captive portal at the URL) is said
as an error answer that is not orch's is: OrchError with the status and "something else answers
at URL", on either backend of the client and in the CLI. It was a raw JSONDecodeError, and "orch
failed unexpectedly ... This is a bug" in the CLI (found by a tester)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orch import Client
from orch.cli.main import app
from orch.client.plain_http import PlainHTTP
from orch.client.transport import Transport, _Httpx
from orch.errors import OrchError

PAGES = {"/v1/agents": b"<html>portal</html>\n", "/v1/secrets": b"\xff\xfe not UTF-8"}


class Page(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = PAGES[self.path.split("?")[0]]
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A web server that is not orch's, answering 200 with a page."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("backend", ["plain", "httpx"])
@pytest.mark.parametrize("call", ["agents", "secrets"])
def test_a_page_that_is_not_json_is_something_else_answering(url: str, backend: str, call: str) -> None:
    transport = httpx.HTTPTransport() if backend == "httpx" else None
    with Client(url=url, token="orch_x", transport=transport) as client:
        assert isinstance(client.http._backend, _Httpx if backend == "httpx" else PlainHTTP)
        with pytest.raises(OrchError) as refused:
            getattr(client, call).list()
    assert type(refused.value) is OrchError
    assert refused.value.message == (
        f"The server answered 200 OK, not as an orch server answers: something else answers at {url}."
    )
    assert f"Check that {url} is the address `orch server` printed" in refused.value.fix


def test_the_cli_says_so_and_no_bug(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Transport] = []  # closed after: the command leaves its connection to its exit
    settings = Transport.from_settings
    monkeypatch.setattr(Transport, "from_settings", lambda: made.append(settings()) or made[-1])
    env = {"ORCH_HOME": str(tmp_path), "ORCH_URL": url, "ORCH_TOKEN": "orch_x", "COLUMNS": "200"}
    try:
        res = CliRunner().invoke(app, ["agents", "list"], env=env)
    finally:
        for transport in made:
            transport.close()
    assert made
    assert res.exit_code == 1, res.output
    assert f"something else answers at {url}" in res.output and f"Check that {url}" in res.output
    assert "bug" not in res.output and "Traceback" not in res.output
