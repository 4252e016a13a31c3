"""Sandboxes on demand through the API and the CLI, in-process, on a fake holder (no process runs):
what is stored, the limits and timeouts, the refusals, the NDJSON stream, the reaper's rules."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from typer.testing import CliRunner

from orch import metrics
from orch.cli import client as client_mod
from orch.cli.main import app
from orch.engine.fake import FakeEngine
from orch.engine.network import Network
from orch.errors import EngineError, LimitReached
from orch.sandbox.held_fake import Command, FakeHolder
from orch.sandbox.launcher import Isolation
from orch.server.api import sandboxes as sandboxes_api
from orch.services import sandboxes, workspaces
from orch.services.platform import Platform
from orch.services.run_memory import Budget
from orch.store.schema import BuildRow, EnvironmentRow, SandboxRow, utcnow
from orch.workers.sandboxes import Reaper
from tests.api.conftest import caller, unanswered
from tests.asgi import asgi_scope, in_process
from tests.conftest import close_platform, drain, make_platform

NDJSON = {"Accept": "application/x-ndjson"}


@pytest.fixture
def holder(platform: Platform) -> FakeHolder:
    fake = FakeHolder()
    platform.held.holders.update({Isolation.RUNC: fake, Isolation.GVISOR: fake})
    return fake


def create(api: httpx.Client, **body: object) -> dict:
    resp = api.post("/v1/sandboxes", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def rows(platform: Platform) -> list[SandboxRow]:
    with platform.store.session() as s:
        found = list(s.scalars(select(SandboxRow).order_by(SandboxRow.created_at)))
        for r in found:
            s.expunge(r)
        return found


def until(condition: Callable[[], object], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["message"].endswith(".") and body["fix"], body
    return str(body["message"])


def test_create_holds_a_sandbox_like_a_run(api: httpx.Client, holder: FakeHolder, platform: Platform) -> None:
    sb = create(api)
    assert sb["status"] == "running" and sb["id"].startswith("sbx_")
    assert sb["environment"]["name"] == "python" and sb["isolation"] == "runc"
    assert (sb["memory_bytes"], sb["cpus"], sb["network"], sb["timeout"]) == (512 * 2**20, 1.0, False, 600)
    assert sb["reason"] is None and sb["expires_at"] is not None
    spec = holder.opened[-1]
    # Named under the platform's prefix: the launchers' sweep removes what a killed server left.
    assert spec.name == f"{platform.container_prefix}sb-{sb['id']}"
    assert (spec.user, spec.workdir, spec.read_only, spec.pids) == ("1000:1000", "/home/user", False, 256)
    assert spec.network is Network.NONE and spec.env["HOME"] == "/home/user"
    assert [s["id"] for s in api.get("/v1/sandboxes").json()] == [sb["id"]]
    assert api.get(f"/v1/sandboxes/{sb['id']}").json() == sb
    assert rows(platform)[0].owner == platform.instance


def test_limits_timeout_and_network_are_taken(api: httpx.Client, holder: FakeHolder) -> None:
    sb = create(api, memory="256Mi", cpus=0.5, timeout=30, network=True)
    assert (sb["memory_bytes"], sb["cpus"], sb["timeout"], sb["network"]) == (256 * 2**20, 0.5, 30, True)
    spec = holder.opened[-1]
    assert (spec.memory_bytes, spec.cpus, spec.network) == (256 * 2**20, 0.5, Network.SANDBOX)


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        ({"memory": "lots"}, 400, "memory: 'lots' is not a size."),
        ({"memory": "1Mi"}, 400, "memory: '1Mi' is less than the minimum of 16 MiB."),
        ({"cpus": 0}, 400, "cpus: 0.0 is not between 0.01 and 64 CPUs."),
        ({"timeout": 0}, 400, "An idle timeout of 0 seconds is out of range."),
        ({"timeout": 86401}, 400, "An idle timeout of 86401 seconds is out of range."),
        ({"environment": "nope"}, 404, "No environment 'nope' in this workspace."),
        ({"environment": "nul\x00"}, 422, "environment"),
        ({"network": "maybe"}, 422, "network"),
    ],
)
def test_bad_create_changes_nothing(
    api: httpx.Client, holder: FakeHolder, platform: Platform, body: dict, status: int, said: str
) -> None:
    assert said in error(api.post("/v1/sandboxes", json=body), status)
    assert rows(platform) == [] and holder.opened == []


def test_the_workspace_limit_refuses_with_429(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    platform.config = platform.config.with_values(max_sandboxes=2)
    first, _second = create(api), create(api)
    said = error(api.post("/v1/sandboxes", json={}), 429)
    assert said == "This workspace already holds 2 sandboxes open, its limit (2)."
    assert len(rows(platform)) == 2 and len(holder.opened) == 2
    assert api.delete(f"/v1/sandboxes/{first['id']}").status_code == 204
    create(api)  # room again


def test_the_workspace_limit_holds_across_servers_sharing_the_store(
    holder: FakeHolder,
    platform: Platform,
    workspace: tuple[str, str],
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two servers of one store asked for a sandbox of the same workspace at the same moment:
    one is made, the other refused (before: each server checked and stored its own creates in
    one step, but not against the other's, and both were made past the limit)."""
    other = make_platform(tmp_path / "other", fake_engine, database_url=database_url)
    try:
        other.held.holders.update({Isolation.RUNC: FakeHolder(), Isolation.GVISOR: FakeHolder()})
        for each in (platform, other):
            each.config = each.config.with_values(max_sandboxes=1)
        calls, lock, both = [0], threading.Lock(), threading.Event()
        now = sandboxes.utcnow

        def slow_now() -> datetime:
            # Past the limit's check, before the insert: until the other server's create is
            # there too (or a second has passed: it waits for this one, if they are one step).
            with lock:
                calls[0] += 1
                if calls[0] >= 2:
                    both.set()
            both.wait(1)
            return now()

        monkeypatch.setattr(sandboxes, "utcnow", slow_now)
        made: list[str] = []

        def create_on(server: Platform) -> None:
            try:
                made.append(sandboxes.create(server, workspace[0]).id)
            except LimitReached as e:
                made.append(e.message)

        threads = [threading.Thread(target=create_on, args=(each,)) for each in (platform, other)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert sorted(said.startswith("sbx_") for said in made) == [False, True], made
        assert "This workspace already holds 1 sandbox open, its limit (1)." in made
        assert len([r for r in rows(platform) if r.status in sandboxes.OPEN]) == 1
    finally:
        close_platform(other)


def test_a_workspace_s_sandboxes_hold_at_most_their_share_of_memory(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    platform.config = platform.config.with_values(max_sandbox_memory=1024 * 2**20)
    first = create(api, memory="768Mi")
    said = error(api.post("/v1/sandboxes", json={"memory": "512Mi"}), 429)
    assert said == (
        "This workspace's open sandboxes hold 768 MiB of memory, and this one asks for 512 MiB: more "
        "than the 1 GiB a workspace's sandboxes may hold at once (max_sandbox_memory)."
    )
    assert len(rows(platform)) == 1 and len(holder.opened) == 1
    assert platform.run_memory.used == 768 * 2**20  # the refused one took nothing
    create(api, memory="256Mi")  # what fits in the share goes in
    said = error(api.post("/v1/sandboxes", json={"memory": "2Gi"}), 400)  # never fits
    assert said == (
        "This sandbox asks for 2 GiB of memory, more than the 1 GiB that a workspace's sandboxes "
        "may hold at once (max_sandbox_memory)."
    )
    with platform.store.session() as s:  # another workspace has a share of its own
        _, other = workspaces.create_workspace(s, "other")
    theirs = api.post("/v1/sandboxes", json={"memory": "768Mi"}, headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == 201, theirs.text
    assert api.delete(f"/v1/sandboxes/{first['id']}").status_code == 204
    create(api, memory="768Mi")  # room in the share again


def test_an_environment_that_is_not_ready_is_refused(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    said = error(api.post("/v1/sandboxes", json={"environment": "python-ml"}), 409)
    assert said == "The environment python-ml is being built for its first use."
    with platform.store.session() as s:  # its build was queued
        env = s.scalar(select(EnvironmentRow).where(EnvironmentRow.name == "python-ml"))
        assert env is not None and env.build_id is not None
    assert "is still building" in error(api.post("/v1/sandboxes", json={"environment": "python-ml"}), 409)
    drain(platform)
    assert create(api, environment="python-ml")["environment"]["name"] == "python-ml"
    with platform.store.session() as s:  # failed, and no earlier build's image to run instead
        s.execute(update(BuildRow).values(status="failed", error="step 2 failed"))
        s.execute(update(EnvironmentRow).where(EnvironmentRow.name == "python-ml").values(image=None))
    assert "its build failed (step 2 failed)" in error(
        api.post("/v1/sandboxes", json={"environment": "python-ml"}), 409
    )
    assert len(holder.opened) == 1 and holder.opened[0].image


def test_the_workspace_default_environment_is_used(api: httpx.Client, holder: FakeHolder) -> None:
    assert api.put("/v1/workspace/default-environment", json={"environment": "node"}).status_code == 200
    assert create(api)["environment"]["name"] == "node"
    assert create(api, environment="python")["environment"]["name"] == "python"


def test_a_start_that_fails_is_recorded(api: httpx.Client, holder: FakeHolder, platform: Platform) -> None:
    holder.fail = EngineError("The OCI runtime runc is not installed.", "Install it.")
    assert error(api.post("/v1/sandboxes", json={}), 502) == "The OCI runtime runc is not installed."
    (row,) = rows(platform)
    assert (row.status, row.reason) == (
        "failed",
        "it could not start: The OCI runtime runc is not installed.",
    )
    assert api.get("/v1/sandboxes").json() == []
    assert api.get("/v1/sandboxes", params={"all": "true"}).json()[0]["status"] == "failed"
    # The runtime's own refusal says "could not start" once, not twice.
    holder.fail = EngineError("The sandbox could not start: no space left on device.", "Free some.")
    assert error(api.post("/v1/sandboxes", json={}), 502).startswith("The sandbox could not start: ")
    assert rows(platform)[-1].reason == "it could not start: no space left on device."


def test_a_create_whose_caller_goes_away_leaves_no_sandbox(
    served: tuple[str, str], workspace: tuple[str, str], holder: FakeHolder, platform: Platform
) -> None:
    """As `timeout 0.5 curl -d ... /v1/sandboxes`: the connection closes before the answer."""
    url, headers = f"{served[0]}/v1/sandboxes", {"Authorization": f"Bearer {workspace[1]}"}
    holder.hold = threading.Event()  # a slow start (a first image pull)
    # The caller leaves once the start is under way (a fixed 0.5 s read timeout left before the
    # request reached the holder on a loaded machine).
    host, port = urlsplit(url).hostname or "", urlsplit(url).port or 80
    body = json.dumps({"memory": "64Mi"}).encode()
    with socket.create_connection((host, port), timeout=10) as caller:
        caller.sendall(
            f"POST /v1/sandboxes HTTP/1.1\r\nHost: {host}\r\nAuthorization: {headers['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert holder.holding.wait(30), "the start never began"
    time.sleep(2 * sandboxes_api.WATCH)  # the route sees its client gone while the start goes on
    holder.hold.set()
    until(lambda: holder.sandboxes and holder.last().removed, "the sandbox was left held")
    until(lambda: rows(platform)[0].status == "removed", "the sandbox's record was left open")
    assert rows(platform)[0].reason == sandboxes.ABANDONED
    assert platform.held.ids() == [] and platform.run_memory.used == 0
    assert metrics.of(platform)._sandboxes._value.get() == 0
    # One that waits for memory when its caller goes: it never starts, and leaves no record.
    platform.run_memory = Budget(512 * 2**20)
    holder.hold = None
    full = httpx.post(url, json={}, headers=headers, timeout=10)
    assert full.status_code == 201, full.text
    left: list[float] = []

    def leave() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json={"memory": "64Mi"}, headers=headers, timeout=httpx.Timeout(10, read=1))
        left.append(time.monotonic())

    waiting = threading.Thread(target=leave)
    waiting.start()
    until(lambda: len(rows(platform)) == 3, "the create never waited")
    waiting.join(10)
    until(lambda: len(rows(platform)) == 2, "the waiting create's record was left")
    assert time.monotonic() - left[0] < sandboxes.MEMORY_WAIT / 2  # it stopped waiting at once
    assert len(holder.opened) == 2 and platform.run_memory.used == 512 * 2**20


def test_a_create_whose_caller_left_as_it_was_answered_is_removed(
    app: FastAPI, workspace: tuple[str, str], holder: FakeHolder, platform: Platform
) -> None:
    """The client's disconnect seen only once the sandbox is there: it goes all the same."""
    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = asgi_scope(
        "POST",
        "/v1/sandboxes",
        {"Host": "testserver", "Authorization": f"Bearer {workspace[1]}", "Content-Type": "application/json"},
    )
    with in_process(app) as transport:
        transport._portal.call(app, scope, receive, send)
    assert sent[0]["status"] == 499
    (row,) = rows(platform)
    assert (row.status, row.reason) == ("removed", sandboxes.ABANDONED)
    assert holder.last().removed and platform.run_memory.used == 0


def test_without_a_launcher_the_server_says_so(api: httpx.Client, platform: Platform) -> None:
    said = error(api.post("/v1/sandboxes", json={}), 502)
    assert said == "This server cannot hold sandboxes open: it has no runc launcher."
    assert rows(platform) == []


def test_exec_collected_and_streamed(api: httpx.Client, holder: FakeHolder) -> None:
    sb = create(api)
    resp = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["echo", "hi", "there"]})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert (data["exit_code"], data["stdout"], data["stderr"], data["timed_out"]) == (
        0,
        "hi there\n",
        "",
        False,
    )
    assert data["duration"] >= 0
    streamed = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["nope"]}, headers=NDJSON)
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert lines[0] == {"stream": "stderr", "data": "orch: nope: command not found\n"}
    assert lines[-1]["exit_code"] == 127 and "duration" in lines[-1]


def test_exec_takes_env_workdir_and_stdin(api: httpx.Client, holder: FakeHolder) -> None:
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    assert api.post(url, json={"command": ["pwd"], "workdir": "proj"}).json()["stdout"] == "/home/user/proj\n"
    assert api.post(url, json={"command": ["cat"], "stdin": "ünï\n"}).json()["stdout"] == "ünï\n"
    env = api.post(url, json={"command": ["env"], "env": {"GREETING": "hello"}}).json()["stdout"]
    assert "GREETING=hello\n" in env and "HOME=/home/user\n" in env


def test_output_split_inside_a_character_is_whole_in_the_stream(
    api: httpx.Client, holder: FakeHolder
) -> None:
    sb = create(api)

    def halves(cmd: Command) -> int:
        cmd.out("é".encode()[:1])
        cmd.out("é".encode()[1:] + b"\xff\n")
        return 3

    holder.last().behaviour = halves
    resp = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["x"]}, headers=NDJSON)
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert "".join(x.get("data", "") for x in lines) == "é\ufffd\n" and lines[-1]["exit_code"] == 3
    assert api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["x"]}).json()["stdout"] == "é\ufffd\n"


def test_collected_output_is_cut_at_the_limit(
    api: httpx.Client, holder: FakeHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandboxes, "MAX_OUTPUT", 10)
    sb = create(api)
    holder.last().behaviour = lambda cmd: cmd.out(b"x" * 25) or 0
    data = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["x"]}).json()
    assert (data["stdout"], data["truncated"]) == ("x" * 10, True)


def test_exec_timeout_kills_the_command(api: httpx.Client, holder: FakeHolder) -> None:
    sb = create(api)
    data = api.post(
        f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["sleep", "30"], "timeout": 0.2}
    ).json()
    assert (data["exit_code"], data["timed_out"]) == (124, True)
    assert data["duration"] < 5


def test_a_stopping_server_kills_running_commands(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    sb = create(api)
    url, answers = f"/v1/sandboxes/{sb['id']}/exec", {}

    def run(kind: str, headers: dict[str, str]) -> None:
        answers[kind] = api.post(url, json={"command": ["sleep", "30"], "timeout": 60}, headers=headers)

    threads = [threading.Thread(target=run, args=a) for a in (("streamed", NDJSON), ("collected", {}))]
    for t in threads:
        t.start()
    until(lambda: holder.last().busy == 2, "the commands never ran")
    platform.stopping.set()  # uvicorn waits for answers in flight: a long command must not hold it
    for t in threads:
        t.join(5)
    # Each says why it ended (before: a bare 137, which an out-of-memory kill also gives).
    said = f"The sandbox {sb['id']} was removed while the command ran (the server stopped)."
    last = json.loads(answers["streamed"].text.splitlines()[-1])
    assert (last["error"], last["message"]) == ("conflict", said) and last["fix"]
    assert error(answers["collected"], 409) == said


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        ({"command": []}, 422, "command"),
        ({"command": [""]}, 400, "The command is empty."),
        ({"command": ["echo", "a\x00b"]}, 400, "The command holds a NUL character"),
        (
            {"command": ["true"], "env": {"1BAD": "x"}},
            400,
            "The environment variable name '1BAD' is not usable.",
        ),
        (
            {"command": ["true"], "env": {"A": "x\x00"}},
            400,
            "The environment variable A holds a NUL character.",
        ),
        # A long name is shown by its start and length, not whole (found by a tester: a 60 KB answer)
        (
            {"command": ["true"], "env": {"1" + "A" * 4999: "x"}},
            400,
            f"The environment variable name '1{'A' * 59}… (5000 characters)' is not usable.",
        ),
        (
            {"command": ["true"], "env": {"A" * 5000: "x\x00"}},
            400,
            f"The environment variable {'A' * 60}… (5000 characters) holds a NUL character.",
        ),
        ({"command": ["true"], "timeout": 0}, 400, "A timeout of 0 seconds is out of range."),
        ({"command": ["true"], "timeout": -1}, 400, "A timeout of -1 seconds is out of range."),
        ({"command": ["true"], "timeout": 86401}, 400, "A timeout of 86401 seconds is out of range."),
        ({"command": ["true"], "workdir": ""}, 400, "The working directory is empty."),
        ({"command": ["true"], "stdin": "x" * (1024 * 1024 + 1)}, 400, "The standard input is 1048577 bytes"),
        ({"command": ["x" * 300_000]}, 400, "The command and its variables are 300001 bytes"),
        (
            {"command": ["echo", "a" * 200_000]},
            400,
            "Argument 2 of the command is 200,000 bytes; Linux takes at most 131,071 in one argument.",
        ),
        (
            {"command": ["true"], "env": {"BIG": "v" * 131_068}},
            400,
            "The environment variable BIG is 131,072 bytes as NAME=value; Linux takes at most 131,071",
        ),
        ({"command": "echo hi"}, 422, "command"),
    ],
)
def test_bad_exec_changes_nothing(
    api: httpx.Client, holder: FakeHolder, body: dict, status: int, said: str
) -> None:
    sb = create(api)
    before = api.get(f"/v1/sandboxes/{sb['id']}").json()["last_used_at"]
    assert said in error(api.post(f"/v1/sandboxes/{sb['id']}/exec", json=body), status)
    assert holder.last().commands == []
    assert api.get(f"/v1/sandboxes/{sb['id']}").json()["last_used_at"] == before


def test_files_round_trip_as_bytes(api: httpx.Client, holder: FakeHolder) -> None:
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/files"
    data = bytes(range(256)) * 10
    resp = api.put(url, params={"path": "dir/blob.bin"}, content=data)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"path": "/home/user/dir/blob.bin", "size": len(data)}
    back = api.get(url, params={"path": "/home/user/dir/blob.bin"})
    assert back.headers["content-type"] == "application/octet-stream" and back.content == data
    assert holder.last().files == {"/home/user/dir/blob.bin": data}
    assert api.put(url, params={"path": "/tmp/empty"}, content=b"").json()["size"] == 0


@pytest.mark.parametrize(
    ("method", "path", "status", "said"),
    [
        ("GET", "/home/user/missing", 404, "No file /home/user/missing in the sandbox."),
        ("PUT", "/etc/passwd", 400, "Could not write /etc/passwd in the sandbox: Permission denied."),
        ("PUT", "", 400, "The path is empty."),
        ("GET", "", 400, "The path is empty."),
        ("PUT", "a\x00b", 400, "NUL"),
        ("GET", "x" * 5000, 422, "path"),
    ],
)
def test_bad_file_requests_change_nothing(
    api: httpx.Client, holder: FakeHolder, method: str, path: str, status: int, said: str
) -> None:
    sb = create(api)
    resp = api.request(method, f"/v1/sandboxes/{sb['id']}/files", params={"path": path}, content=b"x")
    assert said in error(resp, status)
    assert holder.last().files == {}


def test_a_directory_takes_the_file_under_its_own_name(api: httpx.Client, holder: FakeHolder) -> None:
    """As cp, docker cp and podman cp do; a path that must be a directory and is none changes nothing."""
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/files"
    for path, found in (
        ("/tmp", "/tmp/notes.txt"),
        (".", "/home/user/notes.txt"),
        ("/tmp/", "/tmp/notes.txt"),
    ):
        resp = api.put(url, params={"path": path, "name": "notes.txt"}, content=b"hi")
        assert resp.json() == {"path": found, "size": 2}, (path, resp.text)
    assert api.put(url, params={"path": "new", "name": "n"}, content=b"x").json()["path"] == "/home/user/new"
    before = (dict(holder.last().files), set(holder.last().dirs))
    said = error(api.put(url, params={"path": "sub/dir/", "name": "n"}, content=b"x"), 404)
    assert said == "No directory /home/user/sub/dir in the sandbox."
    resp = api.put(url, params={"path": "/tmp"}, content=b"x")
    assert error(resp, 400) == "Could not write /tmp in the sandbox: Is a directory."
    assert resp.json()["fix"] == "Give a path for the file itself, such as DIR/NAME."
    for bad in ("", ".", "..", "a/b"):
        said = error(api.put(url, params={"path": "/tmp", "name": bad}, content=b"x"), 400)
        assert said == f"The file name {bad!r} is not usable: it names no file in a directory."
    assert (holder.last().files, holder.last().dirs) == before
    # Reading one: the fix is about reading.
    resp = api.get(url, params={"path": "/tmp"})
    assert error(resp, 400) == "Could not read /tmp in the sandbox: Is a directory."
    assert "archive" in resp.json()["fix"] and "write" not in resp.json()["fix"]


def test_a_file_over_the_limit_is_refused(api: httpx.Client, holder: FakeHolder, platform: Platform) -> None:
    platform.config = platform.config.with_values(sandbox_file_limit=1024)
    sb = create(api)
    resp = api.put(f"/v1/sandboxes/{sb['id']}/files", params={"path": "big"}, content=b"x" * 1025)
    assert error(resp, 400) == "The file is larger than the 1 KiB a sandbox takes in one call."
    assert holder.last().files == {}
    # Announced larger: refused at once, before the body is read (the server waited for a body
    # of the length a client said, which never came; found by a tester).
    announced = api.put(
        f"/v1/sandboxes/{sb['id']}/files",
        params={"path": "big"},
        content=b"xyz",
        headers={"Content-Length": "999999999999"},
    )
    assert error(announced, 400) == "The file is larger than the 1 KiB a sandbox takes in one call."
    assert holder.last().files == {}
    holder.last().files["/home/user/big"] = b"x" * 2000
    assert "larger than" in error(api.get(f"/v1/sandboxes/{sb['id']}/files", params={"path": "big"}), 400)


def test_unknown_sandboxes_are_404_on_every_route(api: httpx.Client, holder: FakeHolder) -> None:
    for method, suffix, kw in [
        ("GET", "", {}),
        ("DELETE", "", {}),
        ("POST", "/exec", {"json": {"command": ["true"]}}),
        ("PUT", "/files", {"params": {"path": "a"}, "content": b"x"}),
        ("GET", "/files", {"params": {"path": "a"}}),
    ]:
        resp = api.request(method, f"/v1/sandboxes/sbx_nothere00{suffix}", **kw)
        assert error(resp, 404) == "No sandbox 'sbx_nothere00' in this workspace.", (method, suffix)


def test_remove_then_nothing_more_goes_in(api: httpx.Client, holder: FakeHolder, platform: Platform) -> None:
    sb = create(api)
    assert metrics.of(platform)._sandboxes._value.get() == 1
    assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code == 204
    assert holder.last().removed and metrics.of(platform)._sandboxes._value.get() == 0
    shown = api.get(f"/v1/sandboxes/{sb['id']}").json()
    assert (shown["status"], shown["reason"], shown["expires_at"]) == ("removed", "removed on request", None)
    assert api.get("/v1/sandboxes").json() == []
    assert [s["id"] for s in api.get("/v1/sandboxes", params={"all": True}).json()] == [sb["id"]]
    said = error(api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["true"]}), 409)
    taken = "it takes no more commands or files"
    assert said == f"The sandbox {sb['id']} is removed (removed on request): {taken}."
    assert error(api.get(f"/v1/sandboxes/{sb['id']}/files", params={"path": "a"}), 409)
    assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code == 204  # removed already: as it is


def test_a_failed_sandbox_says_so(api: httpx.Client, holder: FakeHolder, platform: Platform) -> None:
    sb = create(api)
    with platform.store.session() as s:
        s.execute(
            update(SandboxRow).where(SandboxRow.id == sb["id"]).values(status="failed", reason="it died")
        )
    said = error(api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["true"]}), 409)
    assert said == f"The sandbox {sb['id']} has failed (it died): it takes no more commands or files."


def test_a_command_whose_sandbox_is_removed_ends_with_a_sentence(
    api: httpx.Client, holder: FakeHolder
) -> None:
    """Not with the kill's 137, which an out-of-memory kill also gives."""
    sb = create(api)
    url, answers = f"/v1/sandboxes/{sb['id']}/exec", {}

    def run(kind: str, headers: dict[str, str]) -> None:
        answers[kind] = api.post(url, json={"command": ["sleep", "30"]}, headers=headers)

    threads = [threading.Thread(target=run, args=a) for a in (("streamed", NDJSON), ("collected", {}))]
    for t in threads:
        t.start()
    until(lambda: holder.last().busy == 2, "the commands never ran")
    assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code == 204
    for t in threads:
        t.join(10)
    said = f"The sandbox {sb['id']} was removed while the command ran (removed on request)."
    last = json.loads(answers["streamed"].text.splitlines()[-1])
    assert (last["error"], last["message"]) == ("conflict", said) and last["fix"]
    assert error(answers["collected"], 409) == said


def test_the_reaper_removes_idle_and_expired_sandboxes(
    holder: FakeHolder, platform: Platform, api: httpx.Client
) -> None:
    idle, old, busy, fresh = create(api, timeout=5), create(api), create(api, timeout=5), create(api)
    past = utcnow() - timedelta(seconds=10)
    with platform.store.session() as s:
        s.execute(
            update(SandboxRow).where(SandboxRow.id.in_([idle["id"], busy["id"]])).values(last_used_at=past)
        )
        born = past - timedelta(seconds=86400)
        s.execute(update(SandboxRow).where(SandboxRow.id == old["id"]).values(created_at=born, deadline=past))
    assert holder.sandboxes[f"{platform.container_prefix}sb-{busy['id']}"].claim(1)  # a command runs
    assert sorted(sandboxes.reap(platform)) == sorted([idle["id"], old["id"]])
    by_id = {s["id"]: s for s in api.get("/v1/sandboxes", params={"all": True}).json()}
    assert by_id[idle["id"]]["reason"] == "idle for 5 s"
    assert by_id[old["id"]]["reason"] == "it reached the end of its lifetime (86400 s)"
    assert by_id[busy["id"]]["status"] == by_id[fresh["id"]]["status"] == "running"
    assert sandboxes.reap(platform) == []


def test_a_sandbox_whose_init_exited_is_failed(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    sb = create(api)
    holder.last().die()
    said = error(api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["true"]}), 409)
    assert said == f"The sandbox {sb['id']} stopped running; it was marked failed."
    shown = api.get(f"/v1/sandboxes/{sb['id']}").json()
    assert (
        shown["status"] == "failed" and "its init process (under gVisor, its kernel) ended" in shown["reason"]
    )
    other = create(api)
    holder.last().die()
    assert sandboxes.reap(platform) == [other["id"]]


def test_exec_and_files_keep_it_alive(api: httpx.Client, holder: FakeHolder, platform: Platform) -> None:
    sb = create(api, timeout=5)
    with platform.store.session() as s:
        s.execute(update(SandboxRow).values(last_used_at=utcnow() - timedelta(seconds=10)))
    assert api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["true"]}).status_code == 200
    assert sandboxes.reap(platform) == []
    with platform.store.session() as s:
        s.execute(update(SandboxRow).values(last_used_at=utcnow() - timedelta(seconds=10)))
    assert api.put(f"/v1/sandboxes/{sb['id']}/files", params={"path": "a"}, content=b"1").status_code == 200
    assert sandboxes.reap(platform) == []


def test_removed_by_another_server_goes_here_too(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    sb = create(api)
    with platform.store.session() as s:  # another server on the database ended it
        s.execute(update(SandboxRow).values(status="removed", reason="removed on request"))
    assert sandboxes.reap(platform) == [sb["id"]] and holder.last().removed


def test_held_by_another_server(api: httpx.Client, holder: FakeHolder, platform: Platform) -> None:
    sb = create(api)
    platform.held.pop(sb["id"])
    said = error(api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["true"]}), 409)
    assert said == f"The sandbox {sb['id']} is held by another orch server on this database."


def test_a_restart_removes_what_it_cannot_vouch_for(
    api: httpx.Client, holder: FakeHolder, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    kept, gone = create(api), create(api)
    with platform.store.session() as s:  # one of another server's on the same database
        s.execute(update(SandboxRow).where(SandboxRow.id == kept["id"]).values(owner="someoneelse"))
    with caplog.at_level("INFO"):
        assert sandboxes.recover(platform) == 1
    assert "removed 1 sandbox on demand that this server held before it restarted" in caplog.text
    shown = api.get(f"/v1/sandboxes/{gone['id']}").json()
    assert (shown["status"], shown["reason"]) == ("removed", "the server restarted")
    assert api.get(f"/v1/sandboxes/{kept['id']}").json()["status"] == "running"


def test_a_stopping_server_removes_its_sandboxes(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    sb = create(api)
    assert sandboxes.close_all(platform, "the server stopped") == 1
    assert holder.last().removed
    assert api.get(f"/v1/sandboxes/{sb['id']}").json()["reason"] == "the server stopped"


@pytest.mark.parametrize(("node", "reason"), [(None, "the server stopped"), ("n1", "node stopped")])
def test_the_reapers_stop_says_whose_stop_removed_the_sandboxes(
    api: httpx.Client, holder: FakeHolder, platform: Platform, node: str | None, reason: str
) -> None:
    """On a cluster's node the stop is the node's (`orch node stop`, docs/scale.md): its open
    sandboxes say `node stopped`, as its runs do, not that a server stopped (found by a fixer)."""
    sb = create(api)
    platform.node = node
    try:
        Reaper(platform).stop()
    finally:
        platform.node = None
    assert api.get(f"/v1/sandboxes/{sb['id']}").json()["reason"] == reason


# ---- the CLI on top -------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str], holder: FakeHolder):
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")
    before = signal.getsignal(signal.SIGINT)  # `sandbox create` leaves Ctrl-C ignored: the process ends
    yield lambda *args, input=None: runner.invoke(app, list(args), input=input)
    signal.signal(signal.SIGINT, before)


def test_cli_create_exec_cp_list_rm(cli, holder: FakeHolder, tmp_path: Path) -> None:
    res = cli("sandbox", "create", "--memory", "256Mi", "--timeout", "60")
    assert res.exit_code == 0, res.output
    sandbox_id = res.stdout.strip()
    assert (
        sandbox_id.startswith("sbx_") and "256 MiB" in res.stderr and "removed after 60 s idle" in res.stderr
    )
    res = cli("sandbox", "exec", sandbox_id, "--", "echo", "-n", "hello")
    assert (res.exit_code, res.stdout) == (0, "-n hello\n")
    res = cli("sandbox", "exec", sandbox_id, "--", "nope")
    assert res.exit_code == 127 and "orch: nope: command not found" in res.stderr
    res = cli("sandbox", "exec", sandbox_id, "--timeout", "0.2", "--", "sleep", "5")
    assert res.exit_code == 124 and "timed out after 0.2 s" in res.stderr
    data = json.loads(cli("sandbox", "exec", sandbox_id, "--json", "--", "false").stdout)
    assert data["exit_code"] == 1 and {"stdout", "stderr", "duration"} <= set(data)
    res = cli("sandbox", "exec", sandbox_id, "-i", "--", "cat", input="piped\n")
    assert res.stdout == "piped\n"
    local = tmp_path / "in.bin"
    local.write_bytes(b"\x00\x01bytes")
    res = cli("sandbox", "cp", str(local), f"{sandbox_id}:data/in.bin")
    assert res.exit_code == 0, res.output
    assert holder.last().files["/home/user/data/in.bin"] == b"\x00\x01bytes"
    res = cli("sandbox", "cp", f"{sandbox_id}:/home/user/data/in.bin", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "in.bin").read_bytes() == b"\x00\x01bytes"
    listed = json.loads(cli("sandbox", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [sandbox_id]
    table = cli("sandbox", "list").stdout
    assert "LAST USED" in table and sandbox_id in table and "python" in table and " 256 MiB " in table
    assert "NODE" not in table  # one machine's sandboxes: no node to say
    assert cli("sandbox", "rm", sandbox_id).exit_code == 0
    assert json.loads(cli("sandbox", "list", "--json").stdout) == []
    created = json.loads(cli("sandbox", "create", "--json").stdout)
    assert {"id", "status", "environment"} <= set(created) and created["environment"]["name"] == "python"


def test_cli_create_interrupted_says_what_happened(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the server starts it

    monkeypatch.setattr(client_mod.Client, "post", interrupted)
    res = cli("sandbox", "create")
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert "Interrupted: the create was cancelled; no sandbox was left." in res.stderr


def test_cli_exec_says_its_sandbox_was_removed(
    cli, holder: FakeHolder, platform: Platform, workspace: tuple[str, str]
) -> None:
    for json_ in ((), ("--json",)):
        sandbox_id = cli("sandbox", "create").stdout.strip()

        def remove(sandbox_id: str = sandbox_id) -> None:  # from another shell, as it runs
            until(lambda: holder.last().busy == 1, "the command never ran")
            sandboxes.remove(platform, workspace[0], sandbox_id)

        other = threading.Thread(target=remove)
        other.start()
        res = cli("sandbox", "exec", *json_, sandbox_id, "--", "sleep", "30")
        other.join(10)
        assert res.exit_code == 2, (json_, res.output)
        said = f"The sandbox {sandbox_id} was removed while the command ran (removed on request)."
        assert said in res.stderr and "Traceback" not in res.output


def test_cli_cp_into_a_sandbox_directory_keeps_the_file_s_name(
    cli, holder: FakeHolder, tmp_path: Path
) -> None:
    sandbox_id = cli("sandbox", "create").stdout.strip()
    local = tmp_path / "notes.txt"
    local.write_bytes(b"hello")
    for target, found in (
        (f"{sandbox_id}:/tmp", "/tmp/notes.txt"),
        (f"{sandbox_id}:.", "/home/user/notes.txt"),
    ):
        res = cli("sandbox", "cp", str(local), target)
        assert res.exit_code == 0 and f"→ {sandbox_id}:{found} (5 bytes)" in res.stderr, res.output
        assert holder.last().files[found] == b"hello"
    res = cli("sandbox", "cp", str(local), f"{sandbox_id}:sub/dir/")
    assert res.exit_code == 2 and "No directory /home/user/sub/dir in the sandbox." in res.stderr
    assert "/home/user/sub" not in holder.last().dirs  # the failed call made nothing
    res = cli("sandbox", "cp", "-", f"{sandbox_id}:/tmp", input="x")  # no name to give it
    assert res.exit_code == 2 and "Is a directory" in res.stderr and "DIR/NAME" in res.stderr
    res = cli("sandbox", "cp", f"{sandbox_id}:/tmp", str(tmp_path / "out"))
    assert res.exit_code == 2 and "Could not read /tmp in the sandbox: Is a directory." in res.stderr
    assert "can write" not in res.stderr and not (tmp_path / "out").exists()
    # Out of it, a local target ending in / names a directory too (a file of that name was written).
    holder.last().files["/tmp/notes.txt"] = b"hello"
    res = cli("sandbox", "cp", f"{sandbox_id}:/tmp/notes.txt", f"{tmp_path}/nodir/")
    assert res.exit_code == 2 and "a target ending in / names a directory" in res.stderr, res.output
    assert not (tmp_path / "nodir").exists()
    res = cli("sandbox", "cp", f"{sandbox_id}:/tmp/notes.txt", f"{tmp_path}/")
    assert res.exit_code == 0 and (tmp_path / "notes.txt").read_bytes() == b"hello", res.output


def test_cli_rm_tries_every_id(cli, holder: FakeHolder, platform: Platform) -> None:
    first, last = cli("sandbox", "create").stdout.strip(), cli("sandbox", "create").stdout.strip()
    res = cli("sandbox", "rm", first, "sbx_nothere00", "../etc", last)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"Removed {first}" in res.stderr and f"Removed {last}" in res.stderr
    assert "No sandbox 'sbx_nothere00' in this workspace." in res.stderr
    assert "'../etc' is not a sandbox id." in res.stderr
    assert [r.status for r in rows(platform)] == ["removed", "removed"]
    res = cli("sandbox", "rm", first)
    assert res.exit_code == 0 and "Removed" not in res.stderr
    assert f"{first} was already removed (removed on request); nothing to remove." in res.stderr


def test_cli_list_all_says_why_each_ended(cli, holder: FakeHolder) -> None:
    assert (
        cli("sandbox", "list", "--all").stderr
        == "No sandboxes in this workspace. Start one with `orch sandbox create`.\n"
    )
    holder.fail = EngineError("The sandbox could not start: no space left on device.", "Free some.")
    assert cli("sandbox", "create").exit_code == 1
    holder.fail = None
    removed = cli("sandbox", "create").stdout.strip()
    assert cli("sandbox", "rm", removed).exit_code == 0
    header, *lines = cli("sandbox", "list", "--all").stdout.splitlines()
    expires, reason = header.index("EXPIRES"), header.index("REASON")
    assert {line[expires:reason].strip() for line in lines} == {""}  # ended: no expiry
    assert [line[reason:] for line in lines] == [
        "removed on request",
        "it could not start: no space left on device.",
    ]
    assert "NODE" not in header


def test_cli_exec_help_is_whole_sentences(cli) -> None:
    shown = cli("sandbox", "exec", "--help").stdout
    assert "With --json, the result is printed at its end and orch exits 0." in shown


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("sandbox", "create", "--memory", "lots"), "memory: 'lots' is not a size."),
        (("sandbox", "create", "--env", "nope"), "No environment 'nope' in this workspace."),
        (("sandbox", "exec", "sbx_nothere00", "--", "true"), "No sandbox 'sbx_nothere00' in this workspace."),
        (
            ("sandbox", "exec", "sbx_x", "--env", "NOEQUALS", "--", "true"),
            "--env 'NOEQUALS' is not KEY=VALUE.",
        ),
        (("sandbox", "cp", "a", "b"), "One side of `orch sandbox cp` must be ID:PATH"),
        (("sandbox", "cp", "sbx_a:x", "sbx_b:y"), "One side of `orch sandbox cp` must be ID:PATH"),
        (("sandbox", "cp", "/no/such/file", "sbx_nothere00:x"), "Cannot read '/no/such/file'"),
        (("sandbox", "rm", "sbx_nothere00"), "No sandbox 'sbx_nothere00' in this workspace."),
        (("sandbox", "rm", "../etc"), "'../etc' is not a sandbox id."),
        # Floats no JSON request can carry (they ended in "This is a bug" once).
        (("sandbox", "create", "--cpus", "nan"), "--cpus nan is not a number."),
        (("sandbox", "create", "--cpus", "inf"), "--cpus inf is not a number: it is infinite"),
        (("sandbox", "create", "--cpus", "1e-9"), "cpus: 1e-09 is not between 0.01 and 64 CPUs."),
        (("sandbox", "exec", "sbx_x", "--timeout", "nan", "--", "true"), "--timeout nan is not a number."),
        (("sandbox", "exec", "sbx_x", "--env", "A=\udcff", "--", "true"), "--env 'A' is not UTF-8 text"),
    ],
)
def test_cli_bad_input_exits_2_with_a_sentence(
    cli, platform: Platform, args: tuple[str, ...], said: str
) -> None:
    res = cli(*args)
    assert res.exit_code == 2, res.output
    assert said in res.stderr and "Traceback" not in res.output
    assert rows(platform) == []


def test_cli_exec_stdin_that_is_not_text_is_refused(cli, holder: FakeHolder) -> None:
    sandbox_id = cli("sandbox", "create").stdout.strip()
    res = cli("sandbox", "exec", sandbox_id, "-i", "--", "wc", "-c", input=b"\x00\xff\xfebinary")
    assert res.exit_code == 2 and "The standard input is not UTF-8 text (byte 1)." in res.stderr
    assert "orch sandbox cp" in res.stderr and "This is a bug" not in res.output


def test_cli_limit_reached_exits_2(cli, platform: Platform) -> None:
    platform.config = platform.config.with_values(max_sandboxes=1)
    assert cli("sandbox", "create").exit_code == 0
    res = cli("sandbox", "create")
    assert res.exit_code == 2 and "its limit (1)" in res.stderr and "orch sandbox rm ID" in res.stderr


def test_cli_no_memory_left_exits_1_with_a_sentence(
    cli, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandboxes, "MEMORY_WAIT", 0.1)
    platform.run_memory = Budget(512 * 2**20)
    assert cli("sandbox", "create").exit_code == 0  # 512 MiB: the whole budget
    res = cli("sandbox", "create")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "The server's sandboxes hold 512 MiB of the 512 MiB of memory they may have at once" in res.stderr
    assert "Try again when runs or sandboxes have ended" in res.stderr
    assert len(rows(platform)) == 1


# ---- bounds: commands and file calls at once, file calls that block, uploads -----------------


def test_commands_at_once_are_checked_and_counted_in_one_step(api: httpx.Client, holder: FakeHolder) -> None:
    """Requests arriving together: exactly MAX_EXECS run, the rest are 429 before anything runs,
    streamed ones too (before: each passed the check before any was counted, 18 of 40 ran)."""
    sb = create(api)
    url, answers = f"/v1/sandboxes/{sb['id']}/exec", []
    go = threading.Barrier(24)

    def run(i: int) -> None:
        go.wait()
        answers.append(api.post(url, json={"command": ["sleep", "2"]}, headers=NDJSON if i % 2 else {}))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * sandboxes.MAX_EXECS + [429] * (24 - sandboxes.MAX_EXECS), codes
    refused = next(a for a in answers if a.status_code == 429)
    assert error(refused, 429) == (
        "The sandbox is running 16 commands already (file calls included), the most it runs at once."
    )
    assert len(holder.last().commands) == sandboxes.MAX_EXECS and holder.last().busy == 0


def test_a_file_that_is_no_regular_file_is_refused_at_once(api: httpx.Client, holder: FakeHolder) -> None:
    """`cat` of a pipe blocked forever (and held a server thread): refused before it is opened."""
    sb = create(api)
    holder.last().special |= {"/tmp/fifo", "/dev/zero"}
    url = f"/v1/sandboxes/{sb['id']}/files"
    for path in ("/tmp/fifo", "/dev/zero"):
        resp = api.get(url, params={"path": path})
        assert error(resp, 400) == f"Could not read {path} in the sandbox: Not a regular file."
        assert "regular files only" in resp.json()["fix"] and "head -c" in resp.json()["fix"]
    resp = api.put(url, params={"path": "/tmp/fifo"}, content=b"x")
    assert error(resp, 400) == "Could not write /tmp/fifo in the sandbox: Not a regular file."
    assert "cat > PATH" in resp.json()["fix"] and holder.last().busy == 0


def test_a_file_call_that_blocks_ends_at_its_timeout(
    api: httpx.Client, holder: FakeHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandboxes, "FILE_TIMEOUT", 0.3)
    sb = create(api)
    holder.last().blocking.add("/tmp/fifo")  # a pipe put there after the check
    url = f"/v1/sandboxes/{sb['id']}/files"
    said = error(api.get(url, params={"path": "/tmp/fifo"}), 400)
    assert said == "Reading /tmp/fifo in the sandbox took more than 0.3 s; it was stopped."
    said = error(api.put(url, params={"path": "/tmp/fifo"}, content=b"x"), 400)
    assert said == "Writing /tmp/fifo in the sandbox took more than 0.3 s; it was stopped."
    assert holder.last().busy == 0


def test_file_calls_count_against_the_commands_at_once(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    sb = create(api)
    fake = holder.last()
    fake.blocking.add("/tmp/fifo")
    url = f"/v1/sandboxes/{sb['id']}/files"
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(api.get(url, params={"path": "/tmp/fifo"})))
        for _ in range(sandboxes.MAX_EXECS)
    ]
    for t in threads:
        t.start()
    until(lambda: fake.busy == sandboxes.MAX_EXECS, "the reads never ran")
    assert "16 commands already" in error(api.get(url, params={"path": "/tmp/other"}), 429)
    assert "16 commands already" in error(api.put(url, params={"path": "a"}, content=b"x"), 429)
    said = error(api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["true"]}), 429)
    assert "16 commands already (file calls included)" in said
    assert api.delete(f"/v1/sandboxes/{sb['id']}").status_code == 204  # ends the blocked reads
    for t in threads:
        t.join(10)
    said = f"The sandbox {sb['id']} was removed while the file was read (removed on request)."
    assert {error(a, 409) for a in answers} == {said}


def test_file_calls_that_block_hold_no_server_thread_and_end_with_their_caller(
    served: tuple[str, str],
    workspace: tuple[str, str],
    holder: FakeHolder,
    api: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the tester's 42 reads of a pipe: the whole API and /healthz froze (the reads held the 40
    threads of the route pool, every workspace's). Now each is a command of its sandbox, on a
    thread of its own, and killed when its caller goes."""
    monkeypatch.setattr(sandboxes, "FILE_TIMEOUT", 60)
    base, headers = served[0], {"Authorization": f"Bearer {workspace[1]}"}
    boxes = [create(api) for _ in range(3)]
    for fake in holder.sandboxes.values():
        fake.blocking.add("/tmp/fifo")
    callers: list[socket.socket] = []
    try:
        for b in boxes:
            for _ in range(16):
                target = f"/v1/sandboxes/{b['id']}/files?path=%2Ftmp%2Ffifo"
                callers.append(caller(base, "GET", target, headers))
        until(lambda: sum(f.busy for f in holder.sandboxes.values()) == 48, "the reads never ran")
        began = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{base}/v1/sandboxes", headers=headers, timeout=5).status_code == 200
        assert time.monotonic() - began < 2
        assert [unanswered(c) for c in callers] == [True] * 48  # still blocked, unanswered
        for c in callers:  # their callers go away
            c.close()
        # ... and their processes with them, long before their timeout.
        until(lambda: sum(f.busy for f in holder.sandboxes.values()) == 0, "the reads outlived their callers")
    finally:
        for c in callers:
            c.close()
        for b in boxes:
            api.delete(f"/v1/sandboxes/{b['id']}")


def test_file_copies_held_at_once_are_bounded(
    api: httpx.Client, holder: FakeHolder, platform: Platform, workspace: tuple[str, str]
) -> None:
    """Uploads, held whole until written, and reads, held until sent, share one bound: a read's
    bytes were held with none (a workspace's sandboxes, 16 reads each of 64 MiB at once)."""
    platform.config = platform.config.with_values(sandbox_file_limit=1024)
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/files"
    held = sandboxes_api.HELD
    most = max(sandboxes_api.CLIENT_MEMORY, 2048)
    holder.last().files["/home/user/r"] = b"y" * 11
    held.take("other", most // 2, 1024)  # another workspace's, in progress
    try:
        held.take(workspace[0], most // 2 - 10, 1024)  # this workspace's own, in progress
        for resp in (
            api.put(url, params={"path": "a"}, content=b"x" * 11),
            api.get(url, params={"path": "r"}),
        ):
            assert resp.status_code == 503 and resp.headers["retry-after"] == "5", resp.text
            said = resp.json()["message"]
            assert said.startswith("This workspace's file copies and commands in progress hold")
            assert "this copy would pass" in said
        assert "/home/user/a" not in holder.last().files
        held.give(workspace[0], most // 2 - 10)
        held.take("third", most // 2 - 10, 1024)  # the rest of the server's
        for resp in (
            api.put(url, params={"path": "a"}, content=b"x" * 11),
            api.get(url, params={"path": "r"}),
        ):
            assert resp.status_code == 503 and "The server holds" in resp.json()["message"]
        held.give("third", most // 2 - 10)
        assert api.put(url, params={"path": "a"}, content=b"x" * 11).status_code == 200
        assert api.get(url, params={"path": "r"}).content == b"y" * 11
    finally:
        held.give("other", most // 2)
    assert held.held == 0  # each copy gave its room back


def test_streamed_commands_are_bounded_with_the_file_copies(
    api: httpx.Client, holder: FakeHolder, platform: Platform, workspace: tuple[str, str]
) -> None:
    """The tester's 320 slow readers (16 streamed commands in each of 5 sandboxes of 4
    workspaces) took the server from 120 MB to 2.3 GB: streams had a bound each, none for all.
    Each now takes STREAM_ROOM in the server's one bound for what it holds for clients, with the
    file copies, before its command starts: past it, 503 and nothing runs."""
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    held, room = sandboxes_api.HELD, sandboxes_api.STREAM_ROOM
    most = max(sandboxes_api.CLIENT_MEMORY, 2 * int(platform.config.sandbox_file_limit))
    held.take("other", most // 2, 0)  # another workspace's, in progress
    try:
        held.take(workspace[0], most // 2 - room + 1, 0)  # this workspace's copies and streams
        resp = api.post(url, json={"command": ["echo", "hi"]}, headers=NDJSON)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5", resp.text
        said = resp.json()["message"]
        assert said.startswith("This workspace's file copies and commands in progress hold")
        assert "this streamed command would pass the 128 MiB a workspace's may hold at once." in said
        assert holder.last().commands == []  # nothing ran
        held.give(workspace[0], most // 2 - room + 1)
        held.take("third", most // 2 - room + 1, 0)  # the rest of the server's
        resp = api.post(url, json={"command": ["echo", "hi"]}, headers=NDJSON)
        assert resp.status_code == 503 and resp.json()["message"].startswith("The server holds"), resp.text
        assert holder.last().commands == []
        held.give("third", most // 2 - room + 1)
        lines = api.post(url, json={"command": ["echo", "hi"]}, headers=NDJSON).text.splitlines()
        assert json.loads(lines[0]) == {"stream": "stdout", "data": "hi\n"}
    finally:
        held.give("other", most // 2)
    assert held.held == 0  # the stream gave its room back once its answer and its command ended


def test_collected_output_is_held_within_the_bound_and_past_it_the_command_is_stopped(
    api: httpx.Client, holder: FakeHolder, workspace: tuple[str, str]
) -> None:
    """A collected command's output (up to 1 MiB a stream) was held outside the server's bound:
    16 commands in each of a workspace's sandboxes, 2 MiB each. It now takes its room as it
    comes, until its answer was sent; past the bound the command is stopped, and says so."""
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    held = sandboxes_api.HELD
    most = max(sandboxes_api.CLIENT_MEMORY, 2 * 64 * 2**20)
    seen: list[int] = []
    chunk = b"x" * 65536

    def flood(cmd: Command) -> int:
        for _ in range(32):  # 2 MiB; 1 MiB kept
            cmd.out(chunk)
            seen.append(held.held)
            if not cmd.sleep(0.001):  # stopped
                return 137
        return 0

    holder.last().behaviour = flood
    answer = api.post(url, json={"command": ["flood"]}).json()
    assert answer["truncated"] and len(answer["stdout"]) == 2**20
    assert max(seen) == 2**20  # kept, it was held; what was only counted was not
    assert held.held == 0  # ... and given back once the answer was sent
    held.take(workspace[0], most // 2 - 3 * 65536, 0)  # this workspace's copies and commands
    try:
        seen.clear()
        resp = api.post(url, json={"command": ["flood"]})
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5", resp.text
        said = resp.json()["message"]
        assert said.startswith("This workspace's file copies and commands in progress hold"), said
        assert "this command's output would pass the 128 MiB a workspace's may hold at once." in said
        assert said.endswith("The command was stopped."), said
        assert len(seen) == 4  # stopped at its fourth part, not run to its end
    finally:
        held.give(workspace[0], most // 2 - 3 * 65536)
    assert held.held == 0


@pytest.mark.parametrize("route", ["sandbox file", "agent bundle"])
def test_an_upload_cut_short_by_its_caller_is_answered_499_and_logs_no_traceback(
    app: FastAPI,
    api: httpx.Client,
    holder: FakeHolder,
    workspace: tuple[str, str],
    route: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller that went away while its body came (Ctrl-C of a large write_file) logged a
    whole "Exception in ASGI application" traceback each time: it is an everyday event."""
    if route == "sandbox file":
        path, query = f"/v1/sandboxes/{create(api)['id']}/files", b"path=part.bin"
    else:
        path, query = "/v1/agents/cut/versions", b""
    scope = asgi_scope(
        "PUT" if route == "sandbox file" else "POST",
        path,
        {"Host": "testserver", "Authorization": f"Bearer {workspace[1]}", "Content-Length": "1000000"},
    )
    scope["query_string"] = query
    parts = [{"type": "http.request", "body": b"x" * 1000, "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    with anyio.from_thread.start_blocking_portal() as portal:
        portal.call(app, scope, receive, send)  # raised before: the server logged its traceback
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.exc_info]
    assert sandboxes_api.HELD.held == 0


def test_a_slow_reader_holds_little_of_the_server_and_its_command_waits(
    app: FastAPI,
    api: httpx.Client,
    holder: FakeHolder,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that reads nothing (the tester's SO_RCVBUF 4096, never read): its command's output
    waits in the server, at most STREAM_BUFFER bytes of it (before: 64 chunks of 64 KiB, 4 MiB,
    and ~7 MB resident a stream with what went with them), and the command waits on its pipe
    meanwhile. Its room goes back once the client went away and its command ended."""
    sb = create(api)
    chunk, emitted = b"x" * 65536, []

    def flood(cmd: Command) -> int:
        for _ in range(256):  # 16 MiB
            cmd.out(chunk)
            emitted.append(len(chunk))
        return 0

    holder.last().behaviour = flood
    full = threading.Event()

    class Watched(sandboxes_api._Buffer):
        def take(self, size: int, stopped: Callable[[], bool]) -> bool:
            if self.held and self.held + size > self.most:
                full.set()  # the command waits for its reader from here
            return super().take(size, stopped)

    monkeypatch.setattr(sandboxes_api, "_Buffer", Watched)
    body = json.dumps({"command": ["flood"]}).encode()
    scope = asgi_scope(
        "POST",
        f"/v1/sandboxes/{sb['id']}/exec",
        {
            "Host": "testserver",
            "Authorization": f"Bearer {workspace[1]}",
            "Accept": "application/x-ndjson",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        },
    )
    gone, began = threading.Event(), threading.Event()
    asked = [False]

    async def receive() -> dict[str, object]:
        if not asked[0]:
            asked[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        while not gone.is_set():
            await anyio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            began.set()
            while True:  # a reader that never reads: its first line never leaves
                await anyio.sleep(0.01)

    with anyio.from_thread.start_blocking_portal() as portal:
        answer = portal.start_task_soon(app, scope, receive, send)
        assert full.wait(10), "the command's output never waited for its reader"
        assert began.wait(10), "no line left for the reader"  # it may follow the buffer's filling
        # The line on its way, and the buffer's: not the 16 MiB it wrote, nor 4 MiB.
        assert sum(emitted) <= sandboxes_api.STREAM_BUFFER + len(chunk)
        assert sandboxes_api.HELD.held == sandboxes_api.STREAM_ROOM
        gone.set()  # the client goes away
        answer.result(10)
    until(lambda: holder.last().busy == 0, "the command outlived its reader")
    until(lambda: sandboxes_api.HELD.held == 0, "the stream's room never came back")


def test_without_a_timeout_a_command_runs_within_a_short_lifetime(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    """sandbox_lifetime under the 60 s default: every command without a timeout was refused, with
    "A timeout of None seconds"."""
    platform.config = platform.config.with_values(sandbox_lifetime=30)
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    assert api.post(url, json={"command": ["echo", "hi"]}).json()["stdout"] == "hi\n"
    resp = api.post(url, json={"command": ["true"], "timeout": 31})
    assert error(resp, 400) == "A timeout of 31 seconds is out of range."
    assert resp.json()["fix"] == "Use more than 0 and at most 30 (the sandbox's lifetime)."
    assert api.post(url, json={"command": ["true"], "timeout": 30}).status_code == 200


def test_a_killed_command_whose_sandbox_is_seen_ended_a_moment_later_says_so(
    api: httpx.Client, holder: FakeHolder, platform: Platform
) -> None:
    """Under gVisor a command killed with its sandbox can answer (137) before the sandbox's
    process has exited: on a loaded machine the answer was the 137, the death unsaid (CI)."""
    sb = create(api)
    fake = holder.last()

    def killed_then_ended(cmd: Command) -> int:
        threading.Timer(0.3, fake.die).start()  # its process exits a moment after the command's answer
        return 137

    fake.behaviour = killed_then_ended
    resp = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["sh", "-c", "kill -KILL 1"]})
    assert error(resp, 409).startswith(f"The sandbox {sb['id']} stopped running while the command ran")
    assert api.get(f"/v1/sandboxes/{sb['id']}").json()["status"] == "failed"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_command_whose_sandbox_dies_under_it_says_so(
    api: httpx.Client, holder: FakeHolder, platform: Platform, streamed: bool
) -> None:
    """Its init killed (from inside, or the host): the kernel kills the command, whose 137 is not
    its own; the answer says so at once, not after the reaper's next look."""
    sb = create(api)
    fake, answers = holder.last(), []
    headers = NDJSON if streamed else {}

    def run() -> None:
        body = {"command": ["sleep", "30"]}
        answers.append(api.post(f"/v1/sandboxes/{sb['id']}/exec", json=body, headers=headers))

    t = threading.Thread(target=run)
    t.start()
    until(lambda: fake.commands, "the command never ran")
    fake.die()
    t.join(10)
    said = (
        f"The sandbox {sb['id']} stopped running while the command ran (it stopped by itself: its "
        "init process (under gVisor, its kernel) ended); it was marked failed."
    )
    if streamed:
        last = json.loads(answers[0].text.splitlines()[-1])
        assert (last["error"], last["message"]) == ("conflict", said)
    else:
        assert error(answers[0], 409) == said
    assert api.get(f"/v1/sandboxes/{sb['id']}").json()["status"] == "failed"
    assert platform.held.get(sb["id"]) is None


def test_cli_create_interrupted_once_answered_keeps_the_sandbox(
    cli, holder: FakeHolder, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C as the id is printed: before, exit 130 with the id printed and the sandbox left
    open (or a traceback from the interpreter's exit); now the id, exit 0, and Ctrl-C ignored
    until the process is gone."""
    from orch.cli import sandbox as cli_sandbox

    printed = cli_sandbox.console.print

    def print_interrupted(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands as the answer is printed
        time.sleep(0.05)
        printed(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_sandbox.console, "print", print_interrupted)
    res = cli("sandbox", "create")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().startswith("sbx_") and "Traceback" not in res.output
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    (row,) = rows(platform)
    assert (row.id, row.status) == (res.stdout.strip(), "running")
