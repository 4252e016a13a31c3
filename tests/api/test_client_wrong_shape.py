"""A 200 answer of JSON that is not of orch's shape (`{}`, `[]`, `"x"`, `null`, an object without
the fields orch sends: another program or a proxy on the configured URL, a server of another
version) is one sentence naming the URL and the fix: OrchError from the client, exit 1 from the
CLI. It was a KeyError, TypeError or AttributeError: a traceback from the client, "This is a bug"
from the CLI (found by a tester). docs/client.md, docs/cli.md."""

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
from orch.client.transport import Transport
from orch.errors import OrchError

SAID = "answered something orch does not understand"


class Other(BaseHTTPRequestHandler):
    """Answers every request 200 with `body` (JSON, but not orch's)."""

    protocol_version = "HTTP/1.1"
    body = b"{}"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """The URL of a server that is not orch's, and a function that sets what it answers."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    handler = type("Answering", (Other,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(body: bytes) -> None:
        handler.body = body

    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()
        server.server_close()


def _cli(url: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    made: list[Transport] = []  # closed after: the command leaves its connection to its exit
    settings = Transport.from_settings
    monkeypatch.setattr(Transport, "from_settings", lambda: made.append(settings()) or made[-1])
    env = {"ORCH_HOME": str(tmp_path), "ORCH_URL": url, "ORCH_TOKEN": "orch_x", "COLUMNS": "200"}
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        for transport in made:
            transport.close()


OBJECT_ANSWERS = [b"{}", b"[]", b'"x"', b"null", b"3", b'{"id": "run_1"}', b""]
LIST_ANSWERS = [b"{}", b'"x"', b"null", b'{"id": "run_1"}', b'[{"id": "run_1"}]', b'["x"]']
COMMANDS = [
    *((["run", "hello"], body) for body in OBJECT_ANSWERS),
    # the run is created, and its logs' answer is read as the run was: no `offsets`
    (["run", "hello"], b'{"id": "run_1", "agent": "hello", "agent_version": 1}'),
    *((["runs", "show", "run_1"], body) for body in OBJECT_ANSWERS),
    *((["runs", "events", "run_1"], body) for body in OBJECT_ANSWERS),
    *((["sandbox", "rm", "sbx_1"], body) for body in OBJECT_ANSWERS),
    *((["sandbox", "create"], body) for body in OBJECT_ANSWERS),
    *((["runs", "list"], body) for body in LIST_ANSWERS),
    *((["sandbox", "list"], body) for body in LIST_ANSWERS),
    *((["node", "list"], body) for body in LIST_ANSWERS),
    # every other list the CLI reads (they were a TypeError "This is a bug", or `{}` an empty
    # table and exit 0; found by a tester)
    *(
        (args, body)
        for args in (
            ["agents", "list"],
            ["env", "list"],
            ["service", "list"],
            ["secret", "list"],
            ["workspace", "list"],
            ["token", "list"],
        )
        for body in LIST_ANSWERS
    ),
    # --json prints the list as the server sent it: what is not a list of objects is refused
    *(
        (args, body)
        for args in (["agents", "list", "--json"], ["secret", "list", "--json"], ["token", "list", "--json"])
        for body in LIST_ANSWERS
        if body != b'[{"id": "run_1"}]'
    ),
    # `orch sandbox exec`'s answer, streamed as JSON lines
    *(
        (["sandbox", "exec", "sbx_1", "--", "ls"], body)
        for body in (
            b"[]\n",
            b'"x"\n',
            b"null\n",
            b'{"stream": "stdout"}\n',
            b'{"stream": "elsewhere", "data": "hi"}\n',
            b'{"stream": "stdout", "data": 3}\n',
            b'{"stream": "stdout", "data": "hi\\n"}\n{"exit_code": "zero"}\n',
            b'{"stream": "stdout", "data": "hi\\n"}\n{"exit_code": null}\n',
        )
    ),
]


@pytest.mark.parametrize(("args", "body"), COMMANDS, ids=[f"{' '.join(a)}: {b!r}" for a, b in COMMANDS])
def test_the_cli_says_an_answer_of_another_shape_in_a_sentence(
    other: tuple[str, Any], args: list[str], body: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answer = other
    answer(body)
    res = _cli(url, args, tmp_path, monkeypatch)
    assert res.exit_code == 1, res.output
    assert f"The server at {url} {SAID}" in res.output, res.output
    assert f"Check that {url} is the address `orch server` printed" in res.output
    assert "bug" not in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception


def test_a_field_missing_is_named(
    other: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answer = other
    answer(b'{"id": "run_1", "agent": "hello"}')
    res = _cli(url, ["runs", "show", "run_1"], tmp_path, monkeypatch)
    assert res.exit_code == 1, res.output
    assert f"The server at {url} {SAID}: an object without `agent_version`." in res.output


CALLS = [
    (lambda c: c.runs.create("hello"), b"{}"),
    (lambda c: c.runs.create("hello"), b"[]"),
    (lambda c: c.runs.create("hello"), b""),
    (lambda c: c.runs.get("run_1"), b"null"),
    (lambda c: c.runs.get("run_1"), b'{"id": "run_1"}'),
    (lambda c: c.runs.list(), b"{}"),
    (lambda c: c.runs.list(), b'["x"]'),
    (lambda c: c.agents.list(), b'{"agents": []}'),
    (lambda c: c.agents.get("hello"), b"[]"),
    (lambda c: c.environments.list(), b"[{}]"),
    (lambda c: c.secrets.list(), b'"x"'),
    (lambda c: c.secrets.set("A", "b"), b"[]"),
    (lambda c: c.sandboxes.list(), b"{}"),
    (lambda c: c.sandboxes.get("sbx_1"), b"{}"),
    (lambda c: c.sandboxes.create(), b"[1]"),
]


@pytest.mark.parametrize("backend", ["plain", "httpx"])
@pytest.mark.parametrize(("call", "body"), CALLS)
def test_the_client_raises_orch_error(other: tuple[str, Any], backend: str, call: Any, body: bytes) -> None:
    url, answer = other
    answer(body)
    transport = httpx.HTTPTransport() if backend == "httpx" else None
    with Client(url=url, token="orch_x", transport=transport) as client, pytest.raises(OrchError) as refused:
        call(client)
    assert type(refused.value) is OrchError
    assert refused.value.message.startswith(f"The server at {url} {SAID}: ")
    assert "this version of orch" in refused.value.fix or "the version of orch" in refused.value.fix


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(
    "body",
    [
        b"[]\n",
        b'{"stream": "stdout"}\n',
        b'{"stream": "other", "data": "x"}\n',
        b'{"exit_code": "0"}\n',
        b'{"stdout": "", "stderr": ""}\n',
    ],
)
def test_a_sandbox_exec_answer_of_another_shape(other: tuple[str, Any], streamed: bool, body: bytes) -> None:
    url, answer = other
    with Client(url=url, token="orch_x") as client:
        answer(b'{"id": "sbx_1", "status": "running"}')
        box = client.sandboxes.get("sbx_1")
        answer(body)
        with pytest.raises(OrchError) as refused:
            box.exec("ls", on_stdout=print if streamed else None)
        box.status = "removed"  # nothing to remove at the end
    if streamed and body == b'{"stdout": "", "stderr": ""}\n':  # a line of no kind it knows is skipped
        assert (
            refused.value.message == "The answer to the command in sandbox sbx_1 ended before its exit code."
        )
        return
    assert refused.value.message.startswith(f"The server at {url} {SAID}: "), refused.value.message


def test_wait_on_a_run_whose_logs_are_of_another_shape(other: tuple[str, Any]) -> None:
    url, answer = other
    with Client(url=url, token="orch_x") as client:
        answer(b'{"id": "run_1", "agent": "a", "agent_version": 1, "status": "running"}')
        run = client.runs.get("run_1")
        answer(b'{"status": "running"}')  # a logs answer without offsets
        with pytest.raises(OrchError) as refused:
            run.wait(timeout=5)
    assert refused.value.message == f"The server at {url} {SAID}: an object without `offsets`."
