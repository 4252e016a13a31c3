"""A long poll (a request with the API's `wait`) waits for its answer that long and a margin,
whatever the client's limit for one request: `Client(timeout=5)` lost every run it followed past
5 s ("Lost the orch server"), and `events(wait=30)` sat on the default 30 s limit (found by a
tester). Each request's read timeout is seen where httpx gets it."""

from __future__ import annotations

from typing import Any

import httpx

from orch import Client

POLL_MARGIN = 30.0  # docs/client.md: "as long as it asked the server to wait and 30 s more"

RUN = {
    "id": "run_1",
    "agent": "slow",
    "agent_version": 1,
    "status": "running",
    "exit_code": None,
    "environment": {"id": "env_1", "name": "python", "kind": "predefined"},
    "deps": "none",
    "queued_at": "2026-12-04T10:00:00Z",
}


def logs(status: str, at: int) -> dict[str, Any]:
    return {
        "stdout": "x" * at,
        "stderr": "",
        "log": "",
        "offsets": {"stdout": at, "stderr": 0, "log": 0},
        "status": status,
        "truncated": False,
        **({"run": {**RUN, "status": status, "exit_code": 0}} if status == "succeeded" else {}),
    }


class Server:
    """Answers a run, its logs (running once, then ended) and its events; records what each
    request asked to wait and the read timeout it was sent with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, float | None]] = []
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        wait = request.url.params.get("wait")
        self.seen.append((request.url.path, wait, request.extensions["timeout"]["read"]))
        if request.url.path == "/v1/runs/run_1/logs":
            self.polls += 1
            return httpx.Response(200, json=logs("running" if self.polls == 1 else "succeeded", self.polls))
        if request.url.path == "/v1/runs/run_1/events":
            return httpx.Response(200, json=[])
        return httpx.Response(200, json=RUN)


def client(server: Server, timeout: float) -> Client:
    return Client(
        url="http://orch.test", token="orch_x", timeout=timeout, transport=httpx.MockTransport(server)
    )


def test_a_short_timeout_still_waits_out_each_long_poll_of_a_run() -> None:
    server = Server()
    with client(server, timeout=5) as c:
        run = c.runs.get("run_1")
        assert run.wait().status == "succeeded"
    polls = [(wait, read) for path, wait, read in server.seen if path.endswith("/logs")]
    assert len(polls) == 2
    for wait, read in polls:
        assert wait is not None and float(wait) > 5
        assert read == float(wait) + POLL_MARGIN  # not the client's 5 s
    assert server.seen[0] == ("/v1/runs/run_1", None, 5.0)  # a request that does not wait: 5 s


def test_events_wait_beyond_their_wait_and_the_client_timeout() -> None:
    server = Server()
    with client(server, timeout=5) as c:
        run = c.runs.get("run_1")
        assert run.events(wait=10) == []
    with client(server, timeout=30) as c:  # the default: events(wait=30) sat on it
        run = c.runs.get("run_1")
        assert run.events(wait=30) == []
    events = [(wait, read) for path, wait, read in server.seen if path.endswith("/events")]
    assert events == [("10", 10 + POLL_MARGIN), ("30", 30 + POLL_MARGIN)]


def test_a_long_client_timeout_is_kept_for_a_short_poll() -> None:
    server = Server()
    with client(server, timeout=120) as c:
        c.runs.get("run_1").wait()
    assert all(read == 120 for _, _, read in server.seen)
