"""Input the client can't send, found by a tester: each is refused with `InvalidInput` and a
sentence before any request, and changes nothing; and the two backends (a plain socket for
http://, httpx for https:// and proxies) take and refuse the same things. The client runs
against the app served on loopback, over either backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orch import Client
from orch.cli.main import app as cli_app
from orch.client.plain_http import PlainHTTP
from orch.client.transport import _Httpx
from orch.errors import InvalidInput, NotFound, ServerUnreachable
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.services.platform import Platform
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli_runs import runner


@pytest.fixture(params=["plain", "httpx"])
def client(
    request: pytest.FixtureRequest,
    served: tuple[str, str],
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Client]:
    """A client of the served app over the plain socket (what http:// gets), or over httpx (what
    https:// and a proxy get): both must answer and fail alike."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    transport = httpx.HTTPTransport() if request.param == "httpx" else None
    with Client(served[0], workspace[1], transport=transport) as c:
        assert isinstance(c.http._backend, _Httpx if request.param == "httpx" else PlainHTTP)
        yield c


@pytest.fixture
def holder(platform: Platform) -> FakeHolder:
    fake = FakeHolder()
    platform.held.holders.update({Isolation.RUNC: fake, Isolation.GVISOR: fake})
    return fake


@pytest.fixture
def hello(api: httpx.Client, tmp_path: Path) -> str:
    """An agent a run can be created of (so a request that went out would be taken)."""
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    return "hello"


def refused(call: Callable[[], Any], said: str) -> InvalidInput:
    """The InvalidInput `call` raises (not NotFound or another the server answered), which says
    `said` and has a fix."""
    with pytest.raises(InvalidInput) as e:
        call()
    assert type(e.value) is InvalidInput, e.value
    assert said in e.value.message and e.value.fix, e.value
    return e.value


def test_write_file_takes_text_or_bytes_only(client: Client, holder: FakeHolder) -> None:
    """`write_file(path, None)` sent an empty body and emptied the file; a path that was not
    text (5.5) named a file by its str()."""
    with client.sandboxes.create() as box:
        box.write_file("keep.txt", "important\n")
        for data in (None, 5, 5.5, ["x"], {"a": 1}, (b"x" for _ in range(3))):
            e = refused(lambda: box.write_file("keep.txt", data), "The data to write is ")  # noqa: B023
            assert "it must be text (str, sent as UTF-8) or bytes" in e.message
        assert refused(lambda: box.write_file("keep.txt", None), "").message == (
            "The data to write is None; it must be text (str, sent as UTF-8) or bytes."
        )
        assert box.read_file("keep.txt") == b"important\n"
        for path in (5.5, None, b"keep.txt"):
            refused(lambda: box.write_file(path, "x"), "The file's path is ")  # noqa: B023
            refused(lambda: box.read_file(path), "The file's path is ")  # noqa: B023
        assert sorted(holder.last().files) == ["/home/user/keep.txt"]


def test_bytes_like_data_is_bytes_on_both_backends(client: Client, holder: FakeHolder) -> None:
    """bytearray and memoryview worked over the plain socket and raised httpx's TypeError; a
    generator the other way round."""
    with client.sandboxes.create() as box:
        box.write_file("ba", bytearray(b"abc"))
        box.write_file("mv", memoryview(b"\x00def")[1:])
        box.write_file("empty", b"")
        assert [box.read_file(p) for p in ("ba", "mv", "empty")] == [b"abc", b"def", b""]
        refused(lambda: box.write_file("g", (b"x" for _ in range(3))), "The data to write is a generator;")
        with pytest.raises(NotFound):
            box.read_file("g")


def test_a_closed_client_refuses_every_call_on_both_backends(client: Client, holder: FakeHolder) -> None:
    """The plain backend connected again after close(); httpx raised its own RuntimeError."""
    box = client.sandboxes.create()
    client.close()
    for call in (client.secrets.list, lambda: box.exec(["true"]), lambda: box.read_file("x"), box.remove):
        e = refused(call, "This client was closed; make a new Client.")
        assert "`with` block" in e.fix
    client.close()  # closing again is no error


def test_nan_and_infinity_are_not_sent(client: Client, holder: FakeHolder, hello: str) -> None:
    """Run input went out as '{"a": NaN}', which is not JSON (the CLI refuses it)."""
    for value, said in (
        ({"a": float("nan")}, "`input['a']` is nan, which can't be sent as JSON"),
        ([1, float("inf")], "`input[1]` is inf"),
        ({"b": {"c": -float("inf")}}, "`input['b']['c']` is -inf"),
    ):
        e = refused(lambda: client.runs.create(hello, input=value), said)  # noqa: B023
        assert (
            "(NaN and Infinity are not JSON values)" in e.message
            and e.fix == "Pass a finite number, or None."
        )
    with client.sandboxes.create() as box:
        refused(lambda: box.exec(["true"], timeout=float("inf")), "`timeout` is inf")
        refused(lambda: box.exec(["true"], timeout=float("nan")), "`timeout` is nan")
        assert holder.last().commands == []
    assert client.runs.list() == []


def test_a_lone_surrogate_is_refused_wherever_text_goes(
    client: Client, holder: FakeHolder, hello: str
) -> None:
    """Each of these raised a bare UnicodeEncodeError from inside the backend."""
    with client.sandboxes.create() as box:
        calls: list[tuple[Callable[[], Any], str]] = [
            (lambda: client.runs.create(hello, input="\ud800"), "`input` holds a lone surrogate (\\ud800)"),
            (lambda: client.runs.create(hello, input={"k": "\ud800"}), "`input['k']` holds a lone surrogate"),
            (lambda: client.runs.create(hello, env={"A": "\ud800"}), "`env['A']` holds a lone surrogate"),
            (lambda: client.runs.create(hello, env={"\udc80": "x"}), "A key of `env` holds a lone surrogate"),
            (lambda: box.exec(["echo", "\udc80"]), "`command[1]` holds a lone surrogate (\\udc80)"),
            (lambda: box.exec("echo \udc80"), "`command` holds a lone surrogate (\\udc80)"),
            (lambda: box.exec(["cat"], stdin="\udcff"), "`stdin` holds a lone surrogate (\\udcff)"),
            (lambda: box.exec(["ls"], workdir="/tmp/\udcff"), "`workdir` holds a lone surrogate"),
            (lambda: box.write_file("s.txt", "\ud800"), "The data to write holds a lone surrogate (\\ud800)"),
            (lambda: box.write_file("\udcff.txt", "x"), "`path` holds a lone surrogate (\\udcff)"),
            (lambda: box.read_file("\udcff.txt"), "`path` holds a lone surrogate"),
            (lambda: client.secrets.set("SURR", "a\udc80"), "`value` holds a lone surrogate (\\udc80)"),
            (lambda: client.secrets.set("S\udc80", "x"), "The name or id holds a lone surrogate"),
            (lambda: client.runs.get("run_\udc80"), "The name or id holds a lone surrogate"),
            (lambda: client.sandboxes.create(environment="py\udc80"), "`environment` holds a lone surrogate"),
        ]
        for call, said in calls:
            e = refused(call, said)
            assert e.message.endswith(", which is not UTF-8 text.") and "errors='replace'" in e.fix
        assert holder.last().commands == [] and "/home/user/s.txt" not in holder.last().files
        assert [b.id for b in client.sandboxes.list()] == [box.id]
    assert client.runs.list() == [] and client.secrets.list() == []


def test_values_of_the_wrong_type_are_refused_with_a_sentence(
    client: Client, holder: FakeHolder, hello: str, workspace: tuple[str, str], served: tuple[str, str]
) -> None:
    """Bytes where text goes, a non-string environment and a text timeout raised bare
    TypeErrors (`Object of type bytes is not JSON serializable`, `'<' not supported`)."""
    with client.sandboxes.create() as box:
        e = refused(lambda: box.exec(["cat"], stdin=b"fed"), "`stdin` is bytes, which can't be sent as JSON")  # type: ignore[arg-type]
        assert e.fix == "Pass a str: decode the bytes first (data.decode())."
        refused(lambda: box.exec(5), "`command` is an int; it must be a str")  # type: ignore[arg-type]
        refused(lambda: box.exec(b"ls"), "`command` is bytes; it must be a str")  # type: ignore[arg-type]
        refused(lambda: box.exec(["env"], env="A=1"), "`env` is a str, not a mapping.")  # type: ignore[arg-type]
        refused(lambda: box.exec(["true"], timeout="5"), "The command's timeout is a str, not a number")  # type: ignore[arg-type]
        assert holder.last().commands == []
        refused(lambda: client.secrets.set("KEY", b"value"), "`value` is bytes")  # type: ignore[arg-type]
        refused(lambda: client.sandboxes.create(environment=object()), "`environment` is an object")  # type: ignore[arg-type]
        refused(lambda: client.runs.create(hello, env=[("A", "1")]), "`env` is a list, not a mapping.")  # type: ignore[arg-type]
        refused(lambda: client.runs.create(hello, input={"when": object()}), "`input['when']` is an object")
        refused(lambda: client.runs.get(None), "A name or id must be text, not None.")  # type: ignore[arg-type]
        assert [b.id for b in client.sandboxes.list()] == [box.id]
    assert client.runs.list() == [] and client.secrets.list() == []
    run = client.runs.create(hello, input=bytearray(b"caf\xc3\xa9"), env={"A": "1"})  # bytes-like: UTF-8
    with pytest.raises(TimeoutError):
        run.wait(timeout=0.1)
    refused(lambda: run.wait(timeout="5"), "The wait's timeout is a str, not a number of seconds.")  # type: ignore[arg-type]
    for timeout in ("5", None, True):
        refused(lambda: Client(served[0], workspace[1], timeout=timeout), "The client's timeout is ")  # type: ignore[arg-type]  # noqa: B023
    refused(lambda: Client(served[0], 5), "The server's token is an int, not text.")  # type: ignore[arg-type]


def test_an_empty_name_is_refused_not_taken_as_none(client: Client, holder: FakeHolder, hello: str) -> None:
    """`environment=""` made a sandbox in the default environment; `agent=""` and `before=""`
    listed every run, from the first page."""
    run = client.runs.create(hello)
    for call in (
        lambda: client.sandboxes.create(environment=""),
        lambda: client.runs.list(agent=""),
        lambda: client.runs.list(before=""),
        lambda: client.runs.create(""),
    ):
        refused(call, "An empty name or id was given, which names nothing.")
    assert client.sandboxes.list() == []
    assert [r.id for r in client.runs.list()] == [run.id]  # and None is still "not given"


def test_the_cli_refuses_an_empty_env_for_a_sandbox(
    served: tuple[str, str], workspace: tuple[str, str], holder: FakeHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orch sandbox create --env ''` made a sandbox in the default environment, exit 0."""
    monkeypatch.setenv("ORCH_URL", served[0])
    monkeypatch.setenv("ORCH_TOKEN", workspace[1])
    res = runner.invoke(cli_app, ["sandbox", "create", "--env", ""])
    assert res.exit_code == 2, res.output
    assert "An empty name or id was given, which names nothing." in res.stderr
    with Client(served[0], workspace[1]) as client:
        assert client.sandboxes.list() == []


@pytest.mark.parametrize("option", ["--agent", "--before"])
def test_the_cli_refuses_an_empty_agent_or_before_for_runs_list(
    served: tuple[str, str], workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    """`orch runs list --agent ''` listed every agent's runs; `--before ''` the first page."""
    monkeypatch.setenv("ORCH_URL", served[0])
    monkeypatch.setenv("ORCH_TOKEN", workspace[1])
    res = runner.invoke(cli_app, ["runs", "list", option, ""])
    assert res.exit_code == 2, res.output
    assert "An empty name or id was given, which names nothing." in res.stderr


def test_the_cli_refuses_an_empty_default_environment_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`orch env set-default ''` sent its request: with the server away, "Cannot reach", exit 1."""
    monkeypatch.setenv("ORCH_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ORCH_TOKEN", "orch_unused")
    res = runner.invoke(cli_app, ["env", "set-default", ""])
    assert res.exit_code == 2, res.output
    assert "An empty name or id was given, which names nothing." in res.stderr


def test_more_arguments_of_the_wrong_type_are_refused_before_any_request(
    client: Client, holder: FakeHolder, hello: str, tmp_path: Path
) -> None:
    """Found by a tester: a callback that was no function raised TypeError once the command had
    started; `home=5` a TypeError; a path with a NUL the server's sentence about "the URL"; a
    secret's name 5 was sent as "5"; `all="no"` listed every sandbox, `limit="5"` was taken; an
    empty string command ran `sh -c ""`."""
    with client.sandboxes.create() as box:
        refused(lambda: box.exec(["echo", "hi"], on_stdout=5), "`on_stdout` is an int, not a function.")  # type: ignore[arg-type]
        refused(lambda: box.exec(["echo", "hi"], on_stderr="x"), "`on_stderr` is a str, not a function.")  # type: ignore[arg-type]
        for blank in ("", "  "):
            refused(lambda: box.exec(blank), "`command` is empty: it names no program to run.")  # noqa: B023
        assert holder.last().commands == []
        e = refused(lambda: box.write_file("a\0b", "x"), "The file's path holds a NUL character")
        assert "URL" not in e.message + e.fix
        assert holder.last().files == {}
        refused(lambda: client.sandboxes.list(all="no"), "`all` is a str, not True or False.")  # type: ignore[arg-type]
    refused(lambda: Client(home=5), "`home` is an int, not a path.")  # type: ignore[arg-type]
    refused(lambda: client.secrets.set(5, "v"), "A name or id must be text, not an int.")  # type: ignore[arg-type]
    refused(lambda: client.secrets.delete(5), "A name or id must be text, not an int.")  # type: ignore[arg-type]
    assert client.secrets.list() == []
    for limit in ("5", 5.0, True):
        refused(lambda: client.runs.list(limit=limit), "`limit` is ")  # type: ignore[arg-type]  # noqa: B023
    with pytest.raises(ServerUnreachable):  # a Path (or a str) is a home: this one is empty
        Client(home=tmp_path)
    assert [r.id for r in client.runs.list(limit=5)] == []


@pytest.mark.parametrize(
    ("call", "lists"),
    [
        (lambda c: c.secrets.set("", "v"), "`orch secret list`"),
        (lambda c: c.secrets.delete(""), "`orch secret list`"),
        (lambda c: c.sandboxes.get(""), "`orch sandbox list`"),
        (lambda c: c.runs.get(""), "`orch runs list`"),
        (lambda c: c.runs.list(before=""), "`orch runs list`"),
        (lambda c: c.runs.create(""), "`orch agents list`"),
        (lambda c: c.agents.get(""), "`orch agents list`"),
        (lambda c: c.environments.get(""), "`orch env list`"),
        (lambda c: c.sandboxes.create(environment=""), "`orch env list`"),
    ],
)
def test_an_empty_name_s_fix_names_the_list_that_shows_them(
    client: Client, call: Callable[[Client], Any], lists: str
) -> None:
    """The fix said "(e.g. `orch token list`)" for secrets, sandboxes and runs alike."""
    e = refused(lambda: call(client), "An empty name or id was given, which names nothing.")
    assert lists in e.fix and "orch token list" not in e.fix
