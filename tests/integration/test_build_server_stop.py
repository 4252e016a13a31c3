"""A graceful stop of `orch server` (SIGTERM) during a build, on real Podman: it left `podman
build` and the RUN step's processes running, bounded by no timeout and no disk bound, until the
next start (a found defect)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Server
from tests.integration.test_engine import running

pytestmark = pytest.mark.integration


def building(server: Server, dockerfile: Path, name: str, marker: str) -> None:
    """Create environment `name` whose RUN step sleeps for `marker` (digits) seconds, and return
    once that step runs."""
    dockerfile.write_text(f"FROM e2bdev/code-interpreter:latest\nRUN echo started && sleep {marker}\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", name, "-d")
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.monotonic() + 120
    while not running(f"sleep {marker}"):
        assert time.monotonic() < deadline, "the build never reached its RUN step"
        time.sleep(0.2)


def test_a_stopping_server_ends_its_running_build_and_queues_it_again(make_server, tmp_path: Path) -> None:
    server: Server = make_server()
    server.start()
    marker = str(7_500_000 + os.getpid())
    building(server, tmp_path / "Dockerfile", "long", marker)
    server.stop()  # SIGTERM, as an operator stops it
    assert server.proc is not None and server.proc.returncode is not None
    assert not running(f"sleep {marker}")
    assert not running(f"ORCH_BUILD_OWNER={server.instance}/")  # its podman build
    assert "still busy" not in server.log.read_text()  # stopped within the stop's grace
    # Queued again, as the next start found it before: that start builds it anew.
    server.start()
    log = server.get("/v1/environments/long/logs")["text"]
    assert "The server stopped during this build; it was queued again." in log
    assert server.cli("env", "delete", "long", "--yes").returncode == 0
