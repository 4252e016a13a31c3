"""`orch.Client` against the in-process API (the fake engine runs the runs): settings, runs
followed to their end, agents, environments, secrets, and errors as orch's own exceptions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orch import Client, config
from orch.client import ExecResult, Run, Sandbox
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.errors import CapacityReached, InvalidInput, LimitReached, NotFound, ServerUnreachable, Unauthorized
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.services import sandboxes
from orch.services.platform import Platform
from orch.services.run_memory import Budget
from tests.api.test_agents_runs import bundle, publish
from tests.conftest import drain_runs


@pytest.fixture
def client(api: httpx.Client, workspace: tuple[str, str]) -> Iterator[Client]:
    with Client("http://testserver", workspace[1], transport=api._transport) as c:
        yield c


@pytest.fixture
def hello(api: httpx.Client, tmp_path: Path, fake_engine: FakeEngine) -> str:
    def behave(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        out(b"hello " + spec.env["ORCH_INPUT"].encode() + b" " + spec.env.get("MODE", "").encode())
        err(b"a warning\n")
        return ContainerExit(0)

    fake_engine.behaviour = behave
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    return "hello"


def test_a_run_followed_to_its_end(client: Client, platform: Platform, hello: str) -> None:
    run = client.runs.create(hello, input={"x": 1}, env={"MODE": "test"})
    assert isinstance(run, Run) and run.status == "queued" and not run.ended
    assert run.stdout == "" and run.exit_code is None  # nothing yet: it waits for a worker
    worker = threading.Thread(target=lambda: (time.sleep(0.3), drain_runs(platform)))
    worker.start()
    try:
        assert run.wait(timeout=30) is run  # long-polls: woken by the run's end
    finally:
        worker.join()
    assert (run.status, run.exit_code, run.succeeded, run.reason) == ("succeeded", 0, True, None)
    assert run.stdout == 'hello {"x": 1} test' and run.stderr == "a warning\n"
    assert "→ environment python (base)" in run.log
    assert run.environment.name == "python" and run.environment_rule == "base" and run.duration is not None
    assert run.finished_at is not None and run.finished_at >= run.queued_at  # type: ignore[operator]

    again = client.runs.get(run.id)  # an ended run read afresh: its whole output at once
    assert again.stdout == run.stdout and again.status == "succeeded"
    assert [r.id for r in client.runs.list(agent=hello)] == [run.id]
    text = client.runs.create(hello, input="plain text")  # text goes as it is, not as JSON
    drain_runs(platform)
    assert text.wait(timeout=30).stdout == "hello plain text "


def test_wait_times_out_and_cancel_ends_the_run(client: Client, hello: str) -> None:
    run = client.runs.create(hello)  # no worker: it stays queued
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"Run {run.id} has not ended after 0.5 s"):
        run.wait(timeout=0.5)
    assert time.monotonic() - started < 10
    assert run.cancel().status == "cancelled"
    assert run.wait(timeout=5).status == "cancelled" and run.reason


def test_agents_and_environments(client: Client, hello: str) -> None:
    (agent,) = client.agents.list()
    assert (agent.name, agent.latest_version, agent.latest.entrypoint) == ("hello", 1, "main.py")
    assert agent.versions is None
    shown = client.agents.get("hello")
    assert shown.id == agent.id and [v.version for v in shown.versions or []] == [1]
    names = {e.name: e for e in client.environments.list()}
    assert names["python"].kind == "base" and names["python-ml"].kind == "predefined"
    python = client.environments.get("python")
    assert python.id == names["python"].id and python.status == names["python"].status


def test_secrets(client: Client) -> None:
    created = client.secrets.set("API_KEY", "s3cret")
    assert created.name == "API_KEY" and created.created_at == created.updated_at
    replaced = client.secrets.set("API_KEY", "other")
    assert replaced.updated_at is not None and replaced.updated_at >= created.updated_at  # type: ignore[operator]
    assert [s.name for s in client.secrets.list()] == ["API_KEY"]
    client.secrets.delete("API_KEY")
    assert client.secrets.list() == []
    with pytest.raises(NotFound):
        client.secrets.delete("API_KEY")
    with pytest.raises(InvalidInput):
        client.secrets.set("not a name", "x")


@pytest.fixture
def holder(platform: Platform) -> FakeHolder:
    """Sandboxes held by the fake: a few commands played, files in a dict (see held_fake)."""
    fake = FakeHolder()
    platform.held.holders.update({Isolation.RUNC: fake, Isolation.GVISOR: fake})
    return fake


def test_a_sandbox_in_a_with_block(client: Client, holder: FakeHolder) -> None:
    with client.sandboxes.create(memory="256Mi", cpus=0.5, timeout=60) as box:
        assert isinstance(box, Sandbox) and box.status == "running" and box.id.startswith("sbx_")
        assert (box.memory_bytes, box.cpus, box.timeout, box.network) == (256 * 2**20, 0.5, 60, False)
        assert box.environment.name == "python" and box.isolation == "runc" and box.node is None
        said = box.exec(["echo", "hi", "there"])
        assert said == ExecResult(0, "hi there\n", "", said.duration) and said.duration >= 0
        assert box.exec(["false"]).exit_code == 1
        assert box.exec(["cat"], stdin="fed in").stdout == "fed in"
        assert box.exec(["pwd"], workdir="/tmp").stdout == "/tmp\n"
        assert "MODE=x" in box.exec(["env"], env={"MODE": "x"}).stdout
        box.exec("echo from a shell")  # a string runs under sh -c
        assert holder.last().commands[-1] == ["sh", "-c", "echo from a shell"]
        slow = box.exec(["sleep", "5"], timeout=0.3)
        assert (slow.exit_code, slow.timed_out) == (124, True)

        box.write_file("notes/a.txt", "héllo")  # text as UTF-8, relative to /home/user
        box.write_file("/tmp/b.bin", b"\x00\xff")
        assert box.read_file("/home/user/notes/a.txt") == "héllo".encode()
        assert box.read_file("/tmp/b.bin") == b"\x00\xff"
        with pytest.raises(NotFound):
            box.read_file("missing")
        assert [b.id for b in client.sandboxes.list()] == [box.id]
        assert client.sandboxes.get(box.id).last_used_at is not None
    assert box.status == "removed" and client.sandboxes.list() == []
    assert client.sandboxes.get(box.id).refresh().status == "removed"
    assert [b.id for b in client.sandboxes.list(all=True)] == [box.id]
    box.__exit__(None, None, None)  # removing again is no error


def test_a_with_block_s_own_exception_goes_on_when_the_removal_fails(
    client: Client, holder: FakeHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(self: Sandbox) -> None:
        raise ServerUnreachable("Cannot reach the orch server at http://testserver (ConnectError).")

    with pytest.raises(ValueError, match="the user's real error") as raised, client.sandboxes.create() as box:  # noqa: PT012
        monkeypatch.setattr(Sandbox, "remove", unreachable)  # the server went meanwhile
        raise ValueError("the user's real error")
    assert raised.value.__notes__ == [
        f"The sandbox {box.id} was not removed at the end of the block: Cannot reach the orch server "
        "at http://testserver (ConnectError)."
    ]
    # Without an exception of the block's, the failed removal is what the caller gets.
    with pytest.raises(ServerUnreachable), client.sandboxes.create():
        pass


def test_exec_streams_to_callbacks(client: Client, holder: FakeHolder) -> None:
    with client.sandboxes.create() as box:
        out: list[str] = []
        err: list[str] = []
        result = box.exec(["echo", "streamed"], on_stdout=out.append, on_stderr=err.append)
        assert out == ["streamed\n"] and err == [] and result.stdout == "streamed\n"
        missing = box.exec(["nope"], on_stderr=err.append)
        assert missing.exit_code == 127 and err == [missing.stderr] and "not found" in missing.stderr
        timed = box.exec(["sleep", "5"], timeout=0.3, on_stdout=out.append)
        assert timed.timed_out and timed.exit_code == 124


def test_sandbox_refusals(client: Client, holder: FakeHolder, platform: Platform) -> None:
    with pytest.raises(InvalidInput) as bad:
        client.sandboxes.create(memory="lots")
    assert bad.value.fix
    with pytest.raises(NotFound):
        client.sandboxes.get("sbx_missing")
    boxes = [client.sandboxes.create() for _ in range(platform.config.max_sandboxes)]
    with pytest.raises(LimitReached):
        client.sandboxes.create()
    for box in boxes:
        box.remove()
    assert client.sandboxes.list() == []


def test_a_server_without_memory_for_a_sandbox_raises_capacity_reached(
    client: Client, holder: FakeHolder, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandboxes, "MEMORY_WAIT", 0.1)
    platform.run_memory = Budget(512 * 2**20)
    with client.sandboxes.create(), pytest.raises(CapacityReached) as full:
        client.sandboxes.create(memory="256Mi")
    assert full.value.message.startswith("The server's sandboxes hold 512 MiB of the 512 MiB")
    assert full.value.retry_after == 5 and "orch sandbox rm ID" in full.value.fix
    assert platform.run_memory.used == 0  # the first was removed at the block's end


def test_errors_carry_the_servers_message_and_fix(client: Client, api: httpx.Client, hello: str) -> None:
    with pytest.raises(NotFound) as missing:
        client.runs.create("nope")
    assert "nope" in missing.value.message and missing.value.fix
    with pytest.raises(InvalidInput, match="not usable"):
        client.runs.create(hello, env={"ORCH_X": "1"})
    with pytest.raises(NotFound):
        client.runs.get("run_missing")
    with (
        Client("http://testserver", "wrong", transport=api._transport) as stranger,
        pytest.raises(Unauthorized),
    ):
        stranger.agents.list()


def test_an_unreachable_server(tmp_path: Path) -> None:
    with Client("http://127.0.0.1:9", "t") as nowhere, pytest.raises(ServerUnreachable) as e:
        nowhere.runs.list()
    assert "http://127.0.0.1:9" in e.value.message and "orch server" in e.value.fix


def test_settings_as_the_cli_finds_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORCH_URL", "ORCH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("ORCH_HOME", str(home))
    with pytest.raises(ServerUnreachable, match="No orch server is configured") as none:
        Client()
    assert "orch login" in none.value.fix
    config.write_file(home / "config.toml", {"url": "http://127.0.0.1:8750", "token": "from-file"})
    assert Client().url == "http://127.0.0.1:8750"
    assert Client(home=home).http.headers["Authorization"] == "Bearer from-file"
    monkeypatch.setenv("ORCH_URL", "http://127.0.0.1:9999/")
    assert Client().url == "http://127.0.0.1:9999"  # the environment over the file
    given = Client("http://example.test:1", "mine")
    assert given.url == "http://example.test:1" and given.http.headers["Authorization"] == "Bearer mine"


def test_a_cut_output_is_said_and_inputs_the_client_cannot_send_are_refused(
    client: Client, platform: Platform, hello: str, fake_engine: FakeEngine, api: httpx.Client
) -> None:
    """Found by a tester: a run whose output was cut could not be told from a whole one; bytes
    and other inputs failed with Python's TypeError, a bad timeout with httpx's ValueError, and a
    URL with the API's path with "Nothing is at /v1/v1/runs"."""

    def big(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        out(b"x" * (2 * 1024 * 1024))
        return ContainerExit(0)

    fake_engine.behaviour = big
    run = client.runs.create(hello)
    drain_runs(platform)
    assert run.wait(timeout=30).truncated and len(run.stdout) == 1024 * 1024
    assert client.runs.get(run.id).truncated
    fake_engine.behaviour = lambda spec, out, err: ContainerExit(0)
    whole = client.runs.create(hello, input=b"caf\xc3\xa9")
    drain_runs(platform)
    assert not whole.wait(timeout=30).truncated
    with pytest.raises(InvalidInput, match="bytes that are not UTF-8"):
        client.runs.create(hello, input=b"\xff")
    with pytest.raises(InvalidInput, match="can't be sent as JSON"):
        client.runs.create(hello, input={"when": object()})
    for timeout in (0, -1, float("nan")):
        with pytest.raises(InvalidInput, match="can't be waited"):
            Client("http://testserver", "t", timeout=timeout)
    with pytest.raises(InvalidInput, match="ends in /v1") as e:
        Client("http://testserver/v1/", "t")
    assert e.value.fix == "Use http://testserver."
