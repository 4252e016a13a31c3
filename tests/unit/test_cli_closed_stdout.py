"""A command whose standard output is closed (`orch … | head -1`: the reader took what it wanted)
ends quietly with 141, as a shell shows a Unix tool that wrote to a closed pipe: it exited 1
without a word (click's own EPIPE handling), which reads as a failure. docs/cli.md. And `orch
run ''` is refused before any request, as every command taking a name is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import orch
from orch.cli.main import app

SRC = str(Path(orch.__file__).resolve().parents[1])  # the checkout under test


def test_a_closed_stdout_ends_the_command_quietly_with_141(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11\nRUN pip install six\n")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes its first line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orch.cli.main", "env", "validate", "-f", str(dockerfile)],
            stdout=write,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": SRC, "ORCH_HOME": str(tmp_path)},
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert done.stderr == b""  # no word, and no "Exception ignored … BrokenPipeError" at the exit


def test_run_with_an_empty_agent_is_refused_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ORCH_URL", "http://127.0.0.1:1")  # nothing listens: a request says "Cannot reach"
    monkeypatch.setenv("ORCH_TOKEN", "orch_test")
    res = CliRunner().invoke(app, ["run", ""])
    assert res.exit_code == 2, res.output
    assert "✗ An empty name or id was given, which names nothing." in res.stderr
    assert "`orch agents list` shows them" in res.stderr
    assert "Cannot reach" not in res.output
