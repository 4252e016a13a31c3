"""A follower of a run whose server goes (a graceful stop answers its long polls at once, then stops
answering before a follower can ask again) says so, and how to read the run's end later: not the
connection's error."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from orch.cli import run as run_cli
from orch.cli.main import app
from orch.client.follow import follow
from orch.errors import ServerUnreachable

GONE = ServerUnreachable("Cannot reach the orch server at http://127.0.0.1:1 (ConnectError).", "Start it.")


class Going:
    """Answers POST /v1/runs and one long poll with the run running, then is gone."""

    url = "http://127.0.0.1:1"

    def __init__(self, polls: int = 1) -> None:
        self.polls = polls

    def post(self, path: str, json: Any = None) -> dict[str, Any]:
        assert path == "/v1/runs"
        return {"id": "run_1", "agent": "hello", "agent_version": 1}

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert path == "/v1/runs/run_1/logs"
        if self.polls <= 0:
            raise GONE
        self.polls -= 1
        offsets = {"stdout": 8, "stderr": 0, "log": 0}
        return {"stdout": "working", "stderr": "", "log": "", "offsets": offsets, "status": "running"}


def test_a_server_that_goes_while_followed_is_said_with_how_to_read_the_end() -> None:
    got: list[str] = []
    with pytest.raises(ServerUnreachable) as lost:
        follow(Going(), "run_1", lambda stream, text: got.append(text))  # type: ignore[arg-type]
    assert got == ["working"]
    assert "Lost the orch server while following run run_1" in lost.value.message
    assert "`orch runs show run_1`" in lost.value.fix and "Cannot reach" not in lost.value.message


def test_a_server_never_reached_is_said_as_any_command_says_it() -> None:
    with pytest.raises(ServerUnreachable) as unreachable:
        follow(Going(polls=0), "run_1", lambda stream, text: None)  # type: ignore[arg-type]
    assert unreachable.value is GONE


@pytest.mark.parametrize("args", [["run", "hello"], ["runs", "logs", "run_1", "-f"]])
def test_orch_run_and_runs_logs_follow_say_the_server_went(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setattr(run_cli.Transport, "from_settings", staticmethod(lambda: Going()))
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 1, res.output
    assert "working✗ Lost" in res.output  # the output, then the sentence (on stderr: piped here)
    assert "Lost the orch server while following run run_1" in res.output
    assert "orch runs show run_1" in res.output and "Cannot reach" not in res.output
    assert "Traceback" not in res.output
