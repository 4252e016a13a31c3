"""A 200 answer of JSON that is not of orch's shape (`{}`, `[]`, `"x"`, `null`, an object without
the fields orch sends: another program or a proxy on the configured URL, a server of another
version) is one sentence naming the URL and the fix: OrchError from the client, exit 1 from the
CLI. It was a KeyError, TypeError or AttributeError: a traceback from the client, "This is a bug"
from the CLI (found by a tester). docs/client.md, docs/cli.md."""

from __future__ import annotations

import json
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
        # a scalar of another type in the command's result (found by a tester)
        b'{"exit_code": 0, "stdout": "", "stderr": "", "duration": "1s"}\n',
        b'{"exit_code": 0, "stdout": "", "stderr": "", "duration": 1.0, "timed_out": "false"}\n',
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


LOGS = {"stdout": "", "stderr": "", "log": "", "offsets": {"stdout": 0, "stderr": 0, "log": 0}}


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("status", ["x"], '["x"] as `status` where orch sends text'),
        ("status", 3, "3 as `status` where orch sends text"),
        ("stdout", 7, "7 as `stdout` where orch sends text"),
        ("log", None, "null as `log` where orch sends text"),
        ("offsets", {"stdout": "0"}, '{"stdout": "0"} as `offsets` where orch sends a whole number'),
        ("offsets", {"stdout": -1, "stderr": 0, "log": 0}, "as `offsets` where orch sends a whole number"),
        ("offsets", [], "[] as `offsets` where orch sends a whole number of bytes per stream"),
    ],
)
def test_wait_on_a_run_whose_logs_hold_a_field_of_another_kind(
    other: tuple[str, Any], field: str, value: Any, said: str
) -> None:
    """A logs answer's `status` of another kind was a TypeError against the set of final states
    (`["x"]`), a stream of another kind one in the caller's code (found by a tester)."""
    url, answer = other
    with Client(url=url, token="orch_x") as client:
        answer(b'{"id": "run_1", "agent": "a", "agent_version": 1, "status": "running"}')
        run = client.runs.get("run_1")
        answer(json.dumps({**LOGS, "status": "running", field: value}).encode())
        with pytest.raises(OrchError) as refused:
            run.wait(timeout=5)
    assert refused.value.message.startswith(f"The server at {url} {SAID}: ")
    assert said in refused.value.message


# An answer of orch's shape whose one field is of another type (a server of another version, a
# proxy rewriting bodies): null, a number or text where an object, a list or a time goes. It
# escaped as AttributeError, ValueError or TypeError from records.py and runs.py (found by a
# tester); it is the same sentence as a field missing.
WHEN = "2026-12-04T10:00:00+00:00"
VERSION = {
    "id": "agv_1",
    "version": 1,
    "entrypoint": "main.py",
    "language": "python",
    "command": ["python", "main.py"],
    "created_at": WHEN,
}
AGENT = {"id": "agt_1", "name": "hello", "latest_version": 1, "latest": VERSION, "created_at": WHEN}
RUN = {
    "id": "run_1",
    "agent": "hello",
    "agent_version": 1,
    "status": "running",
    "environment": {"id": "env_1", "name": "python"},
    "queued_at": WHEN,
}
SANDBOX = {
    "id": "sbx_1",
    "status": "running",
    "environment": {"id": "env_1", "name": "python"},
    "created_at": WHEN,
}
TYPED: list[tuple[str, Any, dict[str, Any], str, Any]] = [
    ("agents.get", lambda c: c.agents.get("hello"), {**AGENT, "versions": [VERSION]}, "latest", None),
    ("agents.get", lambda c: c.agents.get("hello"), {**AGENT, "versions": [VERSION]}, "versions", [5]),
    ("agents.get", lambda c: c.agents.get("hello"), {**AGENT, "versions": [VERSION]}, "versions", "x"),
    (
        "agents.get",
        lambda c: c.agents.get("hello"),
        {**AGENT, "versions": [VERSION]},
        "created_at",
        "yesterday",
    ),
    ("agents.get", lambda c: c.agents.get("hello"), {**AGENT, "versions": [VERSION]}, "created_at", 5),
    ("agents.list", lambda c: c.agents.list(), AGENT, "latest", "v1"),
    ("runs.get", lambda c: c.runs.get("run_1"), RUN, "queued_at", "x"),
    ("runs.get", lambda c: c.runs.get("run_1"), RUN, "environment", "python"),
    ("sandboxes.get", lambda c: c.sandboxes.get("sbx_1"), SANDBOX, "created_at", 5),
    ("sandboxes.get", lambda c: c.sandboxes.get("sbx_1"), SANDBOX, "environment", [1]),
]


@pytest.mark.parametrize(
    ("name", "call", "good", "key", "value"), TYPED, ids=[f"{t[0]} {t[3]}={t[4]!r}" for t in TYPED]
)
def test_a_field_of_another_type_is_said_not_raised_raw(
    other: tuple[str, Any], name: str, call: Any, good: dict[str, Any], key: str, value: Any
) -> None:
    import json

    url, answer = other
    listed = name.endswith(".list")
    with Client(url=url, token="orch_x") as client:
        answer(json.dumps([good] if listed else good).encode())
        call(client)  # the answer as orch sends it is read
        bad = {**good, key: value}
        answer(json.dumps([bad] if listed else bad).encode())
        with pytest.raises(OrchError) as refused:
            call(client)
    assert type(refused.value) is OrchError
    assert refused.value.message.startswith(f"The server at {url} {SAID}: ")
    assert f"as `{key}` where orch sends" in refused.value.message


def test_a_sandbox_refreshed_into_a_field_of_another_type(other: tuple[str, Any]) -> None:
    import json

    url, answer = other
    with Client(url=url, token="orch_x") as client:
        answer(json.dumps(SANDBOX).encode())
        box = client.sandboxes.get("sbx_1")
        answer(json.dumps({**SANDBOX, "created_at": 5}).encode())
        with pytest.raises(OrchError, match=f"{SAID}: 5 as `created_at` where orch sends a time"):
            box.refresh()


# A scalar field of another type than orch sends (a server of another version, a proxy rewriting
# bodies): text, a whole number, a number or true/false of another kind, or null where orch never
# sends null. It was handed on in the record as it came (`"network": "false"` a true
# `box.network`, `"exit_code": "x"` an exit code; found by a tester), to fail later in the
# caller's code or to mislead it; it is the sentence of any field of another type, naming the
# field and its value.
ENVIRONMENT = {
    "id": "env_1",
    "name": "python",
    "kind": "base",
    "status": "ready",
    "default": True,
    "description": "Python 3.12",
    "image": None,
    "error": None,
    "created_at": WHEN,
}
SECRET = {"name": "TOKEN", "created_at": WHEN, "updated_at": WHEN}
LOOP_RUN = {**RUN, "usage": {"input_tokens": 3, "output_tokens": 2, "model_calls": 1}}
RUN_GET, RUN_LIST = (lambda c: c.runs.get("run_1")), (lambda c: c.runs.list())
BOX_GET, BOX_LIST = (lambda c: c.sandboxes.get("sbx_1")), (lambda c: c.sandboxes.list())
AGENT_GET, ENV_GET = (lambda c: c.agents.get("hello")), (lambda c: c.environments.get("python"))
# (what is called, the call, an answer as orch sends it, the keys to the field, its wrong value,
# what orch sends there)
SCALARS: list[tuple[str, Any, dict[str, Any], tuple[str, ...], Any, str]] = [
    ("runs.get", RUN_GET, RUN, ("status",), 7, "text"),
    ("runs.get", RUN_GET, RUN, ("id",), None, "text"),
    ("runs.get", RUN_GET, RUN, ("agent",), ["hello"], "text"),
    ("runs.get", RUN_GET, RUN, ("agent_version",), 1.5, "a whole number"),
    ("runs.get", RUN_GET, RUN, ("agent_version",), "1", "a whole number"),
    ("runs.get", RUN_GET, RUN, ("exit_code",), "x", "a whole number"),
    ("runs.get", RUN_GET, RUN, ("exit_code",), True, "a whole number"),
    ("runs.get", RUN_GET, RUN, ("reason",), 5, "text"),
    ("runs.get", RUN_GET, RUN, ("deps",), None, "text"),
    ("runs.get", RUN_GET, RUN, ("duration",), "1s", "a number"),
    ("runs.get", RUN_GET, RUN, ("duration",), False, "a number"),
    ("runs.get", RUN_GET, RUN, ("truncated",), "false", "true or false"),
    ("runs.get", RUN_GET, RUN, ("truncated",), 0, "true or false"),
    ("runs.get", RUN_GET, RUN, ("node",), 1, "text"),
    ("runs.get", RUN_GET, RUN, ("environment", "id"), 1, "text"),
    ("runs.get", RUN_GET, RUN, ("usage",), 3, "an object"),
    ("runs.get", RUN_GET, LOOP_RUN, ("usage", "input_tokens"), "3", "a whole number"),
    ("runs.list", RUN_LIST, RUN, ("status",), None, "text"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("network",), "false", "true or false"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("network",), None, "true or false"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("memory_bytes",), "big", "a whole number"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("memory_bytes",), None, "a whole number"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("cpus",), "2", "a number"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("timeout",), 600.5, "a whole number"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("isolation",), None, "text"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("status",), 1, "text"),
    ("sandboxes.get", BOX_GET, SANDBOX, ("environment", "name"), 5, "text"),
    ("sandboxes.list", BOX_LIST, SANDBOX, ("id",), 12, "text"),
    ("agents.get", AGENT_GET, AGENT, ("id",), None, "text"),
    ("agents.get", AGENT_GET, AGENT, ("latest_version",), "1", "a whole number"),
    ("agents.get", AGENT_GET, AGENT, ("latest", "version"), 1.5, "a whole number"),
    ("agents.get", AGENT_GET, AGENT, ("latest", "bundle_size"), "9", "a whole number"),
    ("agents.get", AGENT_GET, AGENT, ("latest", "entrypoint"), 3, "text"),
    ("agents.get", AGENT_GET, AGENT, ("latest", "pinned_environment"), 3, "text"),
    ("agents.list", lambda c: c.agents.list(), AGENT, ("name",), False, "text"),
    ("environments.get", ENV_GET, ENVIRONMENT, ("default",), "false", "true or false"),
    ("environments.get", ENV_GET, ENVIRONMENT, ("description",), None, "text"),
    ("environments.get", ENV_GET, ENVIRONMENT, ("image",), 5, "text"),
    ("environments.get", ENV_GET, ENVIRONMENT, ("status",), ["ready"], "text"),
    ("environments.list", lambda c: c.environments.list(), ENVIRONMENT, ("kind",), 1, "text"),
    ("secrets.list", lambda c: c.secrets.list(), SECRET, ("name",), 5, "text"),
    ("secrets.set", lambda c: c.secrets.set("TOKEN", "x"), SECRET, ("name",), None, "text"),
]


def _with(answer: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """`answer` with `value` at `keys` (in its object at keys[0] when there are two)."""
    first, *rest = keys
    return {**answer, first: _with(answer[first], tuple(rest), value) if rest else value}


@pytest.mark.parametrize(
    ("name", "call", "good", "keys", "value", "wanted"),
    SCALARS,
    ids=[f"{t[0]} {'.'.join(t[3])}={t[4]!r}" for t in SCALARS],
)
def test_a_scalar_of_another_type_is_said_not_handed_on(
    other: tuple[str, Any],
    name: str,
    call: Any,
    good: dict[str, Any],
    keys: tuple[str, ...],
    value: Any,
    wanted: str,
) -> None:
    import json

    url, answer = other
    listed = name.endswith(".list")
    with Client(url=url, token="orch_x") as client:
        answer(json.dumps([good] if listed else good).encode())
        call(client)  # the answer as orch sends it is read
        bad = _with(good, keys, value)
        answer(json.dumps([bad] if listed else bad).encode())
        with pytest.raises(OrchError) as refused:
            call(client)
    assert type(refused.value) is OrchError
    said = f"{json.dumps(value)} as `{keys[-1]}` where orch sends {wanted}."
    assert refused.value.message == f"The server at {url} {SAID}: {said}"


def test_null_where_orch_sends_it_and_a_field_an_older_server_leaves_out(other: tuple[str, Any]) -> None:
    import json

    url, answer = other
    nulls = {"exit_code": None, "reason": None, "duration": None, "node": None, "usage": None}
    with Client(url=url, token="orch_x") as client:
        answer(json.dumps({**RUN, **nulls, "environment": {"id": None, "name": None}}).encode())
        run = client.runs.get("run_1")
        answer(json.dumps(LOOP_RUN).encode())
        loop = client.runs.get("run_1")
        answer(json.dumps(SANDBOX).encode())  # no isolation, memory_bytes, cpus, network, timeout
        box = client.sandboxes.get("sbx_1")
        answer(json.dumps({**SANDBOX, "network": False, "cpus": 1, "memory_bytes": 512}).encode())
        limited = client.sandboxes.get("sbx_1")
    assert (run.exit_code, run.reason, run.duration, run.node, run.usage) == (None, None, None, None, None)
    assert (run.environment.id, run.environment.name, run.deps, run.truncated) == (None, None, "none", False)
    assert loop.usage == {"input_tokens": 3, "output_tokens": 2, "model_calls": 1}
    assert (box.isolation, box.memory_bytes, box.cpus, box.network, box.timeout) == (
        None,
        None,
        None,
        False,
        None,
    )
    assert (limited.network, limited.cpus, limited.memory_bytes) == (False, 1, 512)
