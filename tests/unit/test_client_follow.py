"""`orch.client.follow` and `Run.wait` against a scripted server: what they ask, what they hand on,
where they stop."""

from __future__ import annotations

from typing import Any

from orch.client.follow import follow
from orch.client.runs import Run


class Scripted:
    """Answers GET /v1/runs/RUN/logs from a list, recording each request's parameters."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers, self.asked = answers, []  # type: ignore[var-annotated]

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if path == "/v1/runs/run_1":
            self.asked.append({"run": True})
            return RUN
        assert path == "/v1/runs/run_1/logs"
        self.asked.append(dict(params or {}))
        return self.answers.pop(0)


RUN = {
    "id": "run_1",
    "agent": "hello",
    "agent_version": 1,
    "status": "succeeded",
    "exit_code": 0,
    "reason": None,
    "environment": {"id": "env_1", "name": "python", "kind": "predefined"},
    "environment_rule": "base",
    "deps": "none",
    "queued_at": "2026-12-04T10:00:00Z",
    "started_at": None,
    "finished_at": None,
    "duration": 0.05,
}


def answer(status: str, at: int, stdout: str = "", log: str = "") -> dict[str, Any]:
    return {
        "stdout": stdout,
        "stderr": "",
        "log": log,
        "offsets": {"stdout": at, "stderr": 0, "log": len(log)},
        "status": status,
        "truncated": False,
    }


def test_the_answer_that_says_ended_is_the_last_one_asked() -> None:
    # The server stores a run's last output with its end and reads the status first: an answer
    # with an ended status holds everything left, so no empty poll follows it.
    server = Scripted([answer("running", 3, "ab\n", "→ env\n"), answer("succeeded", 6, "cd\n")])
    got: list[tuple[str, str]] = []
    last = follow(server, "run_1", lambda stream, text: got.append((stream, text)))  # type: ignore[arg-type]
    assert last["status"] == "succeeded" and not server.answers
    assert got == [("log", "→ env\n"), ("stdout", "ab\n"), ("stdout", "cd\n")]
    assert [a["stdout"] for a in server.asked] == [0, 3] and server.asked[0]["wait"] > 0


def test_an_ended_run_is_read_in_one_request() -> None:
    server = Scripted([answer("failed", 2, "x\n")])
    offsets = {"stdout": 0, "stderr": 0, "log": 0}
    last = follow(server, "run_1", lambda s, t: None, offsets)  # type: ignore[arg-type]
    assert last["status"] == "failed" and len(server.asked) == 1 and offsets["stdout"] == 2


def test_without_waiting_it_stops_at_the_first_answer_with_nothing_new() -> None:
    server = Scripted([answer("running", 1, "a"), answer("running", 1), answer("running", 2, "b")])
    last = follow(server, "run_1", lambda s, t: None, wait=0)  # type: ignore[arg-type]
    assert last["status"] == "running" and len(server.asked) == 2 and len(server.answers) == 1


def test_wait_takes_the_run_from_the_answer_that_saw_it_end() -> None:
    server = Scripted([answer("running", 2, "a\n"), {**answer("succeeded", 2), "run": RUN}])
    run = Run._from_api({**RUN, "status": "queued", "exit_code": None}, server)  # type: ignore[arg-type]
    assert run.wait() is run and (run.status, run.exit_code, run.stdout) == ("succeeded", 0, "a\n")
    assert len(server.asked) == 2 and {"run": True} not in server.asked  # no GET of the run


def test_wait_asks_for_the_run_when_the_answer_lacks_it() -> None:
    # A server from before the answer carried the run.
    server = Scripted([answer("succeeded", 1, "a")])
    run = Run._from_api({**RUN, "status": "running", "exit_code": None}, server)  # type: ignore[arg-type]
    assert run.wait().status == "succeeded" and server.asked[-1] == {"run": True}
