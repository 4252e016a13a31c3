"""Hostile commands in sandboxes on demand: the categories of test_hostile.py, tried through `exec`
(and the file routes) in a held sandbox. Each ends as its run equivalent does: the command's
result is recorded, the sandbox survives or is removed with a recorded reason, nothing reaches
the host, other sandboxes go on. A summary table is printed at the end (pytest -s shows it) and
copied into docs/trust.md."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from orch.sandbox.runc import STATE
from tests.integration.conftest import Server, sandbox_address
from tests.security.test_hostile import LISTEN, PROBE, Listener, connect_from_host, host_address

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTCOMES: list[tuple[str, str, str]] = []  # (category, attempt, recorded outcome)


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    width = max((len(a) for _, a, _ in OUTCOMES), default=10)
    print("\nhostile commands in held sandboxes: category | attempt | recorded outcome")
    for category, attempt, outcome in OUTCOMES:
        print(f"  {category:<22} {attempt:<{width}}  {outcome}")


@pytest.fixture(autouse=True)
def removed_after(server: Server) -> Iterator[None]:
    """Each case's sandboxes go at its end: the module's server (one per runtime) serves them all."""
    yield
    with server.api() as api:
        for sandbox in api.get("/v1/sandboxes").json():
            api.delete(f"/v1/sandboxes/{sandbox['id']}")


def create(server: Server, **body: Any) -> str:
    with server.api() as api:
        resp = api.post("/v1/sandboxes", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def exec_(server: Server, sandbox_id: str, command: list[str], **body: Any) -> httpx.Response:
    with server.api() as api:
        return api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"command": command, **body}, timeout=180)


def python(server: Server, sandbox_id: str, code: str, **body: Any) -> dict[str, Any]:
    resp = exec_(server, sandbox_id, ["python3", "-c", code], **body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


# Whether something in the sandbox listens on TCP port 8080 (0x1F90; state 0A is LISTEN).
LISTENING = (
    "import pathlib\n"
    "rows = [r.split() for r in pathlib.Path('/proc/net/tcp').read_text().splitlines()[1:]]\n"
    "print('yes' if any(r[1].endswith(':1F90') and r[3] == '0A' for r in rows) else 'no')\n"
)


def outcome_of(resp: httpx.Response) -> dict[str, Any] | str:
    """A command's result; or, when its sandbox died under it (gVisor's kernel going down with a
    bomb), the sentence that says so (409), never runsc's own exit code (128) as the command's."""
    if resp.status_code == 409:
        said = resp.json()["message"]
        assert "stopped running while the command ran" in said and "it was marked failed" in said, said
        return "409: the sandbox stopped running while the command ran"
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def state(server: Server, sandbox_id: str) -> dict[str, Any]:
    return server.get(f"/v1/sandboxes/{sandbox_id}")


def answers(server: Server, sandbox_id: str) -> bool:
    resp = exec_(server, sandbox_id, ["echo", "alive"], timeout=20)
    return resp.status_code == 200 and resp.json()["stdout"] == "alive\n"


def fate(server: Server, sandbox_id: str) -> str:
    """After an attack: the sandbox answers; or it is at its process limit (what a fork bomb's
    processes left it), refuses the command in a sentence and goes on; or it ended with its
    reason recorded (an attack that took its init or, under gVisor, its kernel with it). Either
    way it is what its record says."""
    resp = exec_(server, sandbox_id, ["echo", "alive"], timeout=20)
    shown = state(server, sandbox_id)
    if resp.status_code == 200 and resp.json()["stdout"] == "alive\n":
        assert shown["status"] == "running", shown
        return "the sandbox answers"
    if resp.status_code == 409 and "process limit (256)" in resp.json()["message"]:
        assert shown["status"] == "running", shown
        return "new commands refused (its process limit), the sandbox goes on request"
    assert shown["status"] in ("failed", "removed") and shown["reason"], (resp.text, shown)
    return f"the sandbox ended, recorded {shown['status']} ({shown['reason']})"


def record(category: str, attempt: str, result: dict[str, Any] | str, after: str) -> None:
    if isinstance(result, dict):
        said = f"exit {result['exit_code']}" + (" (timed out)" if result.get("timed_out") else "")
    else:
        said = result
    OUTCOMES.append((category, attempt, f"{said}; {after}"))


def test_reading_host_files(server: Server) -> None:
    sb = create(server)
    paths = [str(server.home / "config.toml"), str(server.home / "orch.db"), "/root/.bash_history"]
    code = f"import json, os\nprint(json.dumps({{p: os.path.exists(p) for p in {paths!r}}}))\n"
    result = python(server, sb, code)
    assert result["exit_code"] == 0 and not any(json.loads(result["stdout"]).values())
    # Through the file routes and a symlink: it resolves inside the sandbox, where none exists.
    assert exec_(server, sb, ["ln", "-s", str(server.home / "config.toml"), "link"]).json()["exit_code"] == 0
    with server.api() as api:
        read = api.get(f"/v1/sandboxes/{sb}/files", params={"path": "link"})
    assert read.status_code == 404 and server.token not in read.text
    record("host files", "read ORCH_HOME's config and database, also via a symlink", result, "none visible")


def test_writing_outside_the_sandbox(server: Server, tmp_path: Any) -> None:
    sb = create(server)
    code = (
        "hits = []\n"
        "for p in ('/etc/orch-evil', '/usr/orch-evil', '/opt/orch-evil', '/run/orch-init'):\n"
        "    try:\n"
        "        open(p, 'w').write('x'); hits.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(len(hits))\n"
    )
    result = python(server, sb, code)
    assert result["stdout"] == "0\n"
    # A symlink to a host path, written through the file route: written inside the sandbox.
    target = tmp_path / "host-evil"
    exec_(server, sb, ["ln", "-s", str(target), "/tmp/escape"])
    with server.api() as api:
        put = api.put(f"/v1/sandboxes/{sb}/files", params={"path": "/tmp/escape"}, content=b"evil")
    assert not target.exists() and not os.path.lexists(target)
    assert not os.path.exists("/etc/orch-evil") and not os.path.exists("/opt/orch-evil")
    record(
        "writing outside",
        "write to /etc, /usr, /opt, the init; a symlink to a host path",
        result,
        f"all refused; the symlinked write ({put.status_code}) stayed inside",
    )


def test_seeing_other_processes(server: Server) -> None:
    sb = create(server)
    result = python(server, sb, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))\n")
    assert result["exit_code"] == 0 and int(result["stdout"]) <= 4  # its init, itself
    record("processes", "count processes in /proc", result, f"sees {result['stdout'].strip()} (its own)")


def test_fork_bomb(server: Server) -> None:
    sb, other = create(server), create(server)
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        raise\n"
    result = outcome_of(exec_(server, sb, ["python3", "-c", code], timeout=20))
    assert isinstance(result, str) or result["exit_code"] != 0
    # Its command ended (the first fork that failed), the processes it left go on forking within
    # the sandbox's limits (256 processes, 1 CPU): the machine and other sandboxes go on. Whether
    # a command of its own then finds a free process is a race with those processes: `fate`
    # takes either answer, each checked against the sandbox's record.
    began = time.monotonic()
    assert answers(server, other)
    took = time.monotonic() - began
    outcome = fate(server, sb)
    if state(server, sb)["status"] == "running":
        with server.api() as api:
            assert api.delete(f"/v1/sandboxes/{sb}").status_code == 204
        shown = state(server, sb)
        assert (shown["status"], shown["reason"]) == ("removed", "removed on request")
        outcome += "; removed on request"
    record("fork bomb", "fork until it fails", result, f"{outcome}; another sandbox answered in {took:.1f} s")


def test_memory_bomb(server: Server) -> None:
    sb = create(server, memory="128Mi")
    result = python(server, sb, "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n")
    # Killed by the kernel at the memory limit; under gVisor, its own kernel refuses the memory
    # and Python exits 1 (with no room left to say why).
    gvisor = server.settings.get("ORCH_ISOLATION") == "gvisor"
    assert result["exit_code"] == 137 or (gvisor and result["exit_code"] == 1), result
    record("memory bomb", "allocate 16 MiB blocks forever (128 MiB)", result, fate(server, sb))


def test_filling_the_disk(server: Server, host_disk_kept: Callable[[], None]) -> None:
    sb = create(server, memory="256Mi")
    code = (
        "import errno\n"
        "written = 0\n"
        "for place in ('/home/user/fill', '/tmp/fill'):\n"
        "    try:\n"
        "        with open(place, 'wb') as f:\n"
        "            while True:\n"
        "                f.write(b'x' * (1 << 20)); f.flush(); written += 1\n"
        "    except OSError as e:\n"
        "        print(place, errno.errorcode[e.errno], written)\n"
    )
    result = outcome_of(exec_(server, sb, ["python3", "-c", code], timeout=120))
    assert isinstance(result, str) or "ENOSPC" in result["stdout"] or result["exit_code"] == 137, result
    host_disk_kept()
    outcome = f"the host's disk untouched; {fate(server, sb)}"
    record("filling the disk", "write until the disk is full", result, outcome)


def test_endless_cpu(server: Server) -> None:
    sb = create(server, cpus=0.5)
    result = python(server, sb, "while True:\n    pass\n", timeout=3)
    assert (result["exit_code"], result["timed_out"]) == (124, True)
    record("endless CPU", "busy loop (timeout 3 s)", result, f"killed at its timeout; {fate(server, sb)}")


def probe(server: Server, sandbox_id: str, port: int, hosts: list[str]) -> dict[str, Any]:
    result = python(server, sandbox_id, PROBE, env={"ORCH_INPUT": json.dumps({"port": port, "hosts": hosts})})
    assert result["exit_code"] == 0, result
    return dict(json.loads(result["stdout"]))


def test_reaching_the_server_api_and_host_services(server: Server) -> None:
    sb = create(server, network=True)
    port = int(server.url.rsplit(":", 1)[1])
    assert probe(server, sb, port, ["127.0.0.1"])["connected"] == []
    listener = Listener("0.0.0.0")
    try:
        tried = probe(server, sb, listener.port, [host_address()])["tried"]
        socket.create_connection(("127.0.0.1", listener.port), timeout=3).close()  # the control
        deadline = time.monotonic() + 5
        while not listener.peers and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()
    assert len(tried) >= 4 and listener.peers == ["127.0.0.1"], listener.peers
    record(
        "server API, host",
        f"connect to the server's port and a host service via {len(tried)} addresses",
        "nothing connected",
        "the host's listener saw no sandbox",
    )


def test_listening_port_reached_from_host_and_other_sandboxes(server: Server) -> None:
    listening, neighbour = create(server, network=True), create(server, network=True)
    out: dict[str, Any] = {}

    def listen() -> None:
        out.update(python(server, listening, LISTEN, env={"ORCH_INPUT": "15"}, timeout=60))

    thread = threading.Thread(target=listen)
    thread.start()
    address = ""
    deadline = time.monotonic() + 30
    while not address:
        try:
            address = sandbox_address(listening)
        except (ValueError, RuntimeError):
            assert time.monotonic() < deadline, "the listener never started"
            time.sleep(0.5)
    # Listening, seen from a second command in the same sandbox: a refused connection below then
    # means the firewall refused it, not that nothing listened yet.
    while not python(server, listening, LISTENING)["stdout"].startswith("yes"):
        assert time.monotonic() < deadline, "port 8080 never listened"
        time.sleep(0.2)
    # From the host and, at the same time, from the neighbour: each waits out its own timeout.
    tried: dict[str, str] = {}
    host = threading.Thread(target=lambda: tried.update(host=connect_from_host(address, 8080)))
    host.start()
    neighbour_got = probe(server, neighbour, 8080, [address])["connected"]
    host.join()
    from_host = tried["host"]
    python(server, listening, "open('/tmp/stop', 'w').close()")  # all tried: the listener ends
    thread.join(90)
    seen = json.loads(out["stdout"].splitlines()[-1])
    assert seen["accepted"] == [seen["me"]], seen
    assert from_host != "connected" and neighbour_got == []
    record(
        "listening port",
        "listen on 8080; the host and another sandbox connect",
        out,
        f"host: {from_host}; neighbour: none; the listener accepted only its own control",
    )


def test_secrets_stay_out(server: Server) -> None:
    sb = create(server)
    result = exec_(server, sb, ["env"]).json()
    names = sorted(line.split("=", 1)[0] for line in result["stdout"].splitlines())
    assert not [n for n in names if n.startswith("ORCH_")] and server.token not in result["stdout"]
    for path in [*(server.home / "logs").rglob("*"), *server.home.glob("orch.db*")]:
        if path.is_file():
            assert server.token not in path.read_bytes().decode(errors="replace"), path
    record("secrets", "look for tokens in the environment and logs", result, "no ORCH_* variable, no token")


def test_killing_its_own_init(server: Server) -> None:
    sb = create(server)
    resp = exec_(server, sb, ["sh", "-c", "kill -KILL 1; kill -TERM 1; sleep 1"])
    # The sandbox ended under the command: said, not the kill's exit code (see below).
    result = resp.json() if resp.status_code == 200 else f"{resp.status_code} {resp.json()['message']}"
    deadline = time.monotonic() + 15
    while (shown := state(server, sb))["status"] == "running" and time.monotonic() < deadline:
        if not answers(server, sb):
            continue
        time.sleep(0.5)
    if shown["status"] == "running":
        outcome = "its init ignores signals from inside; the sandbox answers"
        assert answers(server, sb)
    else:
        assert (
            shown["status"] == "failed"
            and "its init process (under gVisor, its kernel) ended" in shown["reason"]
        ), shown
        assert resp.status_code == 409 and "stopped running while the command ran" in resp.text, resp.text
        outcome = f"the sandbox ended; recorded failed ({shown['reason']})"
    record("its own init", "kill PID 1 from inside", result, outcome)


def test_a_command_whose_sandbox_dies_under_it_gets_a_sentence(server: Server) -> None:
    """Its init (under gVisor, its sandbox process) killed from the host while a command runs:
    the command's answer says so, not the kill's 137 (or runsc's 128), and holds none of the
    runtime's own words (runsc's `waiting on pid ...: urpc method ... failed: EOF`)."""
    sb = create(server)
    name = f"orch-{server.instance}-sb-{sb}"
    pid = int((STATE / "sandboxes" / name / "pid").read_text())
    headers = {"Accept": "application/x-ndjson"}
    body = {"command": ["sh", "-c", "echo started; echo to-stderr >&2; sleep 100"]}
    with (
        server.api() as api,
        api.stream("POST", f"/v1/sandboxes/{sb}/exec", json=body, headers=headers, timeout=60) as resp,
    ):
        lines = resp.iter_lines()
        assert json.loads(next(lines)) == {"stream": "stdout", "data": "started\n"}
        os.kill(pid, 9)
        rest = [json.loads(line) for line in lines if line.strip()]
    stderr = "".join(e["data"] for e in rest if e.get("stream") == "stderr")
    assert stderr in ("", "to-stderr\n"), stderr  # the command's own, nothing of the runtime's
    last = rest[-1]
    assert last["error"] == "conflict" and "stopped running while the command ran" in last["message"], last
    shown = state(server, sb)
    assert shown["status"] == "failed", shown
    record("its own init", "its init killed from the host", "409", f"{last['message']}")


def test_a_file_call_on_a_pipe_or_a_device(server: Server) -> None:
    """`cat` of a pipe nobody writes blocked forever, holding a server thread: refused at once."""
    sb = create(server)
    assert exec_(server, sb, ["mkfifo", "/tmp/fifo"]).json()["exit_code"] == 0
    with server.api() as api:
        for path in ("/tmp/fifo", "/dev/zero"):
            began = time.monotonic()
            resp = api.get(f"/v1/sandboxes/{sb}/files", params={"path": path}, timeout=30)
            assert resp.status_code == 400 and time.monotonic() - began < 10, resp.text
            assert resp.json()["message"] == f"Could not read {path} in the sandbox: Not a regular file."
        resp = api.put(f"/v1/sandboxes/{sb}/files", params={"path": "/tmp/fifo"}, content=b"x", timeout=30)
        assert resp.json()["message"] == "Could not write /tmp/fifo in the sandbox: Not a regular file."
        assert api.get("/healthz", timeout=5).status_code == 200
    record("files", "read and write a pipe, read /dev/zero", "400", "refused at once: Not a regular file")
