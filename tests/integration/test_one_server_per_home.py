"""One `orch server` per ORCH_HOME (server/home_lock.py): a second one on the home of a running
server, on other ports, is refused before it touches anything (its start would take the live
server's runs and sandboxes for a stopped server's leftovers and repoint the CLI at itself); a
killed server's home is free again, and the next start settles what it left."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ORCH, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _status(server: Server, path: str, wanted: set[str], timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while (found := server.get(path))["status"] not in wanted:
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    return found


def test_a_second_server_on_a_running_servers_home_is_refused(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first: Server = make_server()
    first.start()
    agent = tmp_path / "sleepy"
    agent.mkdir()
    (agent / "main.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(300)\n")
    assert first.cli("publish", str(agent)).returncode == 0
    run_id = first.cli("run", "sleepy", "--detach").stdout.strip()
    made = first.cli("sandbox", "create", "--json")
    assert made.returncode == 0, made.stderr
    sandbox_id = json.loads(made.stdout)["id"]
    _status(first, f"/v1/runs/{run_id}", {"running"})
    config_before = (first.home / "config.toml").read_bytes()
    pid, url = first.proc.pid, first.url  # type: ignore[union-attr]

    second = subprocess.run(
        [ORCH, "server", "--port", "0", "--services-port", "0"],
        env=first.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second.stdout + second.stderr
    said = " ".join(second.stderr.split())
    assert f"Another orch server (pid {pid}, {url}) runs on ORCH_HOME {first.home}" in said, said
    assert "Stop that server first, or set ORCH_HOME to another directory" in said
    assert "Traceback" not in said and "orch server on" not in second.stdout
    # Nothing of the first server's was touched: its run and sandbox go on, the CLI's config is its.
    assert (first.home / "config.toml").read_bytes() == config_before
    assert first.get(f"/v1/runs/{run_id}")["status"] == "running"
    assert first.get(f"/v1/sandboxes/{sandbox_id}")["status"] == "running"
    executed = first.cli("sandbox", "exec", sandbox_id, "--", "echo", "still here")
    assert executed.returncode == 0 and "still here" in executed.stdout, executed.stderr

    # A killed server holds nothing: the next start on its home starts, and settles what it left.
    first.kill()
    first.start()
    ended = _status(first, f"/v1/runs/{run_id}", {"failed", "succeeded", "cancelled", "timed_out"})
    assert (ended["status"], ended["reason"]) == ("failed", "the server stopped while the run was running")
