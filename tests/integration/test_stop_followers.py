"""`orch run` and `orch runs logs -f` through a graceful stop of their server (SIGTERM): the stop
answers their long polls at once and stops answering before it records the run's end, so they
say that the server went and how to read the run's end later, not a connection error."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ORCH, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_followers_of_a_run_say_the_server_stopped(server: Server, tmp_path: Path) -> None:
    agent = tmp_path / "sleepy"
    agent.mkdir()
    (agent / "main.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(300)\n")
    assert server.cli("publish", str(agent)).returncode == 0
    running = subprocess.Popen(
        [ORCH, "run", "sleepy"], env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert running.stdout is not None
    assert running.stdout.readline() == "started\n"  # bounded by the run's start
    run_id = server.get("/v1/runs", params={"limit": 1})[0]["id"]
    logs = subprocess.Popen(
        [ORCH, "runs", "logs", run_id, "-f"],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert logs.stdout is not None and logs.stdout.readline() == "started\n"
    time.sleep(1)  # both wait in a long poll now
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(30)
    for follower in (running, logs):
        _, err = follower.communicate(timeout=60)
        said = " ".join(err.split())
        assert follower.returncode == 1, said
        assert f"Lost the orch server while following run {run_id}: it stopped" in said, said
        assert f"`orch runs show {run_id}` shows how it ended" in said
        assert "Cannot reach" not in said and "Traceback" not in said
    server.start()  # what the sentence says: the run's end, once the server is back
    shown = server.cli("runs", "show", run_id)
    assert "the server stopped while the run was running" in shown.stdout, shown.stdout + shown.stderr
