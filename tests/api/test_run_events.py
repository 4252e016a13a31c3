"""GET /v1/runs/{id}/events: a run's loop events, listed from a seq on, followed with a long
poll, private to the run's workspace, gone with the run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from orch.services import run_events, workspaces
from orch.services.platform import Platform
from orch.store.schema import RunEventRow
from tests.api.test_agents_runs import bundle, publish

STEPS = [
    ("model_call", {"turn": 1, "input_tokens": 120, "output_tokens": 30, "duration": 0.8, "attempts": 1}),
    ("tool_call", {"call_id": "call_1", "name": "bash", "arguments": {"command": "ls"}}),
    (
        "tool_result",
        {"call_id": "call_1", "name": "bash", "exit_code": 0, "output": "main.py\n", "duration": 0.05},
    ),
    ("model_call", {"turn": 2, "input_tokens": 160, "output_tokens": 12, "duration": 0.4, "attempts": 1}),
    ("final", {"text": "There is one file."}),
]


@pytest.fixture
def run_id(api: httpx.Client, tmp_path: Path) -> str:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    return str(api.post("/v1/runs", json={"agent": "hello"}).json()["id"])  # stays queued: no workers


def test_events_are_listed_in_order_from_a_seq(api: httpx.Client, platform: Platform, run_id: str) -> None:
    assert api.get(f"/v1/runs/{run_id}/events").json() == []
    seqs = [run_events.append(platform, run_id, kind, data) for kind, data in STEPS]
    assert seqs == [1, 2, 3, 4, 5]
    events = api.get(f"/v1/runs/{run_id}/events").json()
    assert [(e["seq"], e["type"]) for e in events] == [(i + 1, kind) for i, (kind, _) in enumerate(STEPS)]
    for event, (_kind, data) in zip(events, STEPS, strict=True):
        assert {k: v for k, v in event.items() if k not in ("seq", "type", "at")} == data
        assert event["at"].endswith(("Z", "+00:00"))
    later = api.get(f"/v1/runs/{run_id}/events", params={"after": 3}).json()
    assert [e["seq"] for e in later] == [4, 5]
    assert [
        e["seq"] for e in api.get(f"/v1/runs/{run_id}/events", params={"after": 1, "limit": 2}).json()
    ] == [2, 3]
    assert api.get(f"/v1/runs/{run_id}/events", params={"after": 5, "wait": 0}).json() == []


def test_a_follower_wakes_when_an_event_comes(api: httpx.Client, platform: Platform, run_id: str) -> None:
    answers: list[list[dict]] = []

    def follow() -> None:
        answers.append(api.get(f"/v1/runs/{run_id}/events", params={"wait": 20}).json())

    thread = threading.Thread(target=follow, daemon=True)
    began = time.monotonic()
    thread.start()
    deadline = time.monotonic() + 10
    while platform.followers(run_id) == 0:
        assert time.monotonic() < deadline, "the follower never waited"
        time.sleep(0.01)
    run_events.append(platform, run_id, "final", {"text": "done"})
    thread.join(20)
    assert [[e["type"] for e in a] for a in answers] == [["final"]]
    assert time.monotonic() - began < 10


def test_a_follower_of_an_ended_run_is_answered_at_once(api: httpx.Client, run_id: str) -> None:
    assert api.post(f"/v1/runs/{run_id}/cancel").json()["status"] == "cancelled"
    began = time.monotonic()
    assert api.get(f"/v1/runs/{run_id}/events", params={"after": 0, "wait": 20}).json() == []
    assert time.monotonic() - began < 5


def test_another_workspaces_run_is_not_found(api: httpx.Client, platform: Platform, run_id: str) -> None:
    run_events.append(platform, run_id, "final", {"text": "private"})
    with platform.store.session() as s:
        _ws, token = workspaces.create_workspace(s, "other")
    other = api.get(f"/v1/runs/{run_id}/events", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 404 and "private" not in other.text
    assert other.json()["error"] == "not_found"
    missing = api.get("/v1/runs/run_nosuch/events")
    assert missing.status_code == 404 and missing.json()["fix"]
    assert api.get(f"/v1/runs/{run_id}/events", headers={"Authorization": "Bearer nope"}).status_code == 401


@pytest.mark.parametrize("params", [{"after": -1}, {"wait": 31}, {"limit": 0}, {"after": "x"}])
def test_bad_queries_are_refused(api: httpx.Client, run_id: str, params: dict[str, object]) -> None:
    resp = api.get(f"/v1/runs/{run_id}/events", params=params)
    assert resp.status_code == 422 and resp.json()["message"].startswith("The request is not valid")


@pytest.mark.parametrize("wait", ["nan", "inf", "-Infinity"])
@pytest.mark.parametrize("path", ["/v1/runs/{run}/events", "/v1/runs/{run}/logs", "/v1/services/web/logs"])
def test_a_wait_that_is_no_number_of_seconds_is_refused_as_such(
    api: httpx.Client, run_id: str, path: str, wait: str
) -> None:
    # Not "must be at most 30": NaN is no more than 30 than it is less.
    resp = api.get(path.format(run=run_id), params={"wait": wait})
    assert resp.status_code == 422
    assert resp.json()["message"] == "The request is not valid: query.wait must be a finite number."


def test_events_go_with_their_run(api: httpx.Client, platform: Platform, run_id: str) -> None:
    for kind, data in STEPS:
        run_events.append(platform, run_id, kind, data)
    assert api.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    assert api.delete("/v1/agents/hello").status_code == 200
    with platform.store.session() as s:
        assert s.scalar(select(func.count()).select_from(RunEventRow)) == 0
