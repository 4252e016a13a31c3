"""Hostile commands through a managed loop's `bash` tool: the model (the scripted server) asks for
what tests/security/test_hostile.py's agents try, and each command runs in the loop run's held
sandbox, as the sandbox user, with the run's limits. A failing tool is a result the model sees:
the run goes on to its answer, or ends with a recorded reason when the sandbox itself is killed;
nothing reaches the host, and the model's key never enters the sandbox."""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Server, sandbox_address, sandboxes
from tests.integration.test_loop_runs import loop_server
from tests.integration.test_runs import write
from tests.model_server import KEY, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture
from tests.security.test_hostile import LISTEN, PROBE, Listener, connect_from_host, host_address, run_probe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMITS = "resources: {memory: 256Mi, pids: 64, timeout: 120}\n"


def hostile_loop(
    server: Server, tmp_path: Path, model_server: ModelServer, name: str, tool_timeout: int = 10
) -> None:
    manifest = (
        f"loop:\n  model: m\n  provider: openai\n  base_url: {model_server.openai_url}\n"
        f"  api_key_secret: MODEL_KEY\n  tool_timeout: {tool_timeout}\n" + LIMITS
    )
    res = server.cli("publish", str(write(tmp_path / name, {"orch.yaml": manifest})), "--name", name)
    assert res.returncode == 0, res.stdout + res.stderr


def probe(port: int, hosts: list[str]) -> str:
    """test_hostile.py's connection probe, as a shell command (its target in ORCH_INPUT)."""
    target = json.dumps({"port": port, "hosts": hosts})
    quick = PROBE.replace("timeout=3", "timeout=1")  # 5 hosts within the tool's timeout
    assert quick != PROBE
    return f"ORCH_INPUT={shlex.quote(target)} python3 -c {shlex.quote(quick)}"


def run_commands(
    server: Server, model_server: ModelServer, agent: str, commands: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A loop run whose model asks for each command in turn, then answers; the run and the tool
    results (the events), in order."""
    model_server.script(*(Reply(calls=[("bash", {"command": c})]) for c in commands), Reply(text="done"))
    res = server.cli("run", agent, "--json", "--input", '{"prompt": "attack"}')
    run: dict[str, Any] = json.loads(res.stdout)
    events = json.loads(server.cli("runs", "events", run["id"], "--json").stdout)
    return run, [e for e in events if e["type"] == "tool_result"]


def test_hostile_commands_through_the_bash_tool(
    make_server: Any, model_server: ModelServer, tmp_path: Path, host_disk_kept: Callable[[], None]
) -> None:
    server = loop_server(make_server, model_server)
    hostile_loop(server, tmp_path, model_server, "hostile")
    listener = Listener("0.0.0.0")
    commands = [
        # Host files: ORCH_HOME's config and database are not there.
        f"ls {server.home}/config.toml {server.home}/orch.db /root/.bash_history",
        # Writing outside: the system's directories and the bundle are not writable.
        "for p in /etc/orch-evil /usr/orch-evil /opt/orch/bundle/evil; do touch $p && echo WROTE $p; done;"
        " true",
        # Processes: only its own.
        "ls /proc | grep -c '^[0-9]'",
        # The model's key and the workspace's token are not in the sandbox.
        f"env | grep -c -e {KEY} -e {server.token} || true",
        # The host's services, on every address it has; the server's own port.
        probe(listener.port, ["10.89.0.1", host_address()]),
        probe(int(server.url.rsplit(":", 1)[1]), ["10.89.0.1", host_address()]),
        # Endless CPU: killed at the tool's timeout (10 s), a result the model sees.
        "while :; do :; done",
        # Filling the disk: the writable places are tmpfs inside the memory limit.
        "dd if=/dev/zero of=/home/user/fill bs=1M 2>&1 | head -1",
    ]
    try:
        run, results = run_commands(server, model_server, "hostile", commands)
    finally:
        listener.close()
    assert (run["status"], run["stdout"]) == ("succeeded", "done"), run
    host_files, writes, procs, secrets, services, api, cpu, disk = results
    assert host_files["exit_code"] != 0 and "No such file" in host_files["output"]
    assert "WROTE" not in writes["output"] and writes["output"].count("cannot touch") == 3, writes
    assert int(procs["output"].strip()) <= 5
    assert secrets["output"].strip() == "0"
    assert '"connected": []' in services["output"] and listener.peers == [], services
    assert '"connected": []' in api["output"], api
    assert cpu["exit_code"] != 0 and cpu["duration"] < 30
    assert "No space left on device" in disk["output"], disk
    host_disk_kept()
    assert not any(os.path.exists(p) for p in ("/etc/orch-evil", "/usr/orch-evil"))
    assert sandboxes(run["id"]) == []


def test_a_fork_bomb_and_a_memory_bomb_through_the_bash_tool(
    make_server: Any, model_server: ModelServer, tmp_path: Path
) -> None:
    server = loop_server(make_server, model_server)
    hostile_loop(server, tmp_path, model_server, "bombs")
    fork = "python3 -c 'import os\nwhile True: os.fork()'"
    memory = "python3 -c 'b = []\nwhile True: b.append(bytearray(16 << 20))'"
    run, results = run_commands(server, model_server, "bombs", [fork, memory])
    # Each is a failed tool the model sees, or the sandbox is killed and the run says so.
    assert run["status"] in ("succeeded", "failed"), run
    if run["status"] == "failed":
        assert run["reason"].startswith(("the tools' sandbox stopped", "killed: memory limit")), run
    else:
        assert all(r["exit_code"] != 0 for r in results) and len(results) == 2, results
    assert sandboxes(run["id"]) == []
    # The machine goes on: the same server runs another loop at once.
    model_server.script(Reply(text="still here"))
    again = json.loads(server.cli("run", "bombs", "--json", "--input", "{}").stdout)
    assert (again["status"], again["stdout"]) == ("succeeded", "still here")


# A listener in the sandbox: test_hostile.py's LISTEN, in the background, once it listens (up to
# 15 s), until told to stop (/tmp/stop; 100 s at most); then, told to, its report once it has one
# (and first, whether it had already ended: then the probes proved nothing).
LISTEN_IN_BACKGROUND = (
    f"ORCH_INPUT=100 nohup python3 -c {shlex.quote(LISTEN)} > /tmp/listen.log 2>&1 & "
    "for i in $(seq 150); do grep -qs listening /tmp/listen.log && break; sleep 0.1; done; "
    "head -1 /tmp/listen.log"
)
LISTENER_REPORT = (
    "grep -qs accepted /tmp/listen.log && echo 'ended before the probes'; touch /tmp/stop; "
    "until grep -qs accepted /tmp/listen.log; do sleep 0.2; done; tail -1 /tmp/listen.log"
)


def test_a_listening_port_and_a_cpu_hog_through_the_bash_tool(
    make_server: Any, model_server: ModelServer, tmp_path: Path
) -> None:
    """The model starts a listener in its sandbox: neither the host nor another sandbox reaches
    it. Then it burns CPU until the tool's timeout: another run on the machine goes on."""
    server = loop_server(make_server, model_server)
    hostile_loop(server, tmp_path, model_server, "hostile", tool_timeout=30)
    commands = [LISTEN_IN_BACKGROUND, LISTENER_REPORT, "timeout 10 sh -c 'while :; do :; done'"]
    # The model asks for the listener's report (which ends it) once the host and the neighbour
    # have tried: the test says when, instead of the listener listening for a fixed time.
    probed = threading.Event()
    later = iter([*(Reply(calls=[("bash", {"command": c})]) for c in commands[1:]), Reply(text="done")])

    def after_the_probes(_body: dict[str, Any]) -> Reply:
        probed.wait(120)
        return next(later)

    model_server.script(Reply(calls=[("bash", {"command": commands[0]})]))
    model_server.respond(after_the_probes)
    write(tmp_path / "nice", {"main.py": "print('still fine')\n"})
    assert server.cli("publish", str(tmp_path / "nice")).returncode == 0

    def events(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
        return list(api.get(f"/v1/runs/{run_id}/events").json())

    def started(api: httpx.Client, run_id: str, command: str) -> None:
        """Wait until the loop's tool runs `command`."""
        deadline = time.monotonic() + 60
        while not any(
            e["type"] == "tool_call" and e.get("arguments") == {"command": command}
            for e in events(api, run_id)
        ):
            assert time.monotonic() < deadline, f"the loop never ran {command!r}"
            time.sleep(0.1)

    with server.api() as api:
        run_id = api.post(
            "/v1/runs", json={"agent": "hostile", "input": json.dumps({"prompt": "attack"})}
        ).json()["id"]
        deadline = time.monotonic() + 60
        while not any(e["type"] == "tool_result" for e in events(api, run_id)):  # the listener listens
            assert time.monotonic() < deadline, "the listener never started"
            time.sleep(0.1)
        address = sandbox_address(run_id)
        # From the host and, at the same time, from another sandbox: each waits out its timeout.
        tried: dict[str, str] = {}
        host = threading.Thread(target=lambda: tried.update(host=connect_from_host(address, 8080)))
        host.start()
        try:
            neighbour = run_probe(server, tmp_path, "neighbour", 8080, [address])
            host.join()
        finally:
            probed.set()
        from_host = tried["host"]
        started(api, run_id, commands[2])  # the CPU hog burns
        nice = json.loads(server.cli("run", "nice", "--json").stdout)
        deadline = time.monotonic() + 120
        while (run := api.get(f"/v1/runs/{run_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
        results = [e for e in events(api, run_id) if e["type"] == "tool_result"]
    assert run["status"] == "succeeded", run
    listening, heard, hog = results
    assert listening["output"].startswith("listening on"), results
    assert "ended before the probes" not in heard["output"], heard  # it listened all along
    seen = json.loads(heard["output"])
    # The listener took exactly one connection: its own control.
    assert seen["accepted"] == [seen["me"]] and seen["me"] == address, seen
    assert from_host != "connected"
    assert json.loads(neighbour["stdout"])["connected"] == []
    assert hog["exit_code"] != 0 and nice["status"] == "succeeded" and nice["stdout"] == "still fine\n"
    assert sandboxes(run_id) == []
