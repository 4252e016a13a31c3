"""Followers of a run's output (`orch run` long-polls /runs/{id}/logs with wait=10) under load:
they wake for their own run only, and their waits hold none of the server's threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from orch import metrics
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.services import runs
from orch.services.platform import Platform
from orch.services.run_output import sizes as run_output_sizes
from orch.store.schema import RunOutputRow
from orch.workers import runs as run_worker
from tests.api.test_agents_runs import bundle, publish

FOLLOWERS = 50  # more than the server's thread pool (anyio's 40 threads)


def _until(check: object, what: str, limit: float = 30) -> None:
    """Wait (bounded) until check() is true."""
    deadline = time.monotonic() + limit
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_followers_hold_no_threads(api: httpx.Client, platform: Platform, tmp_path: Path) -> None:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    run_id = api.post("/v1/runs", json={"agent": "hello"}).json()["id"]  # stays queued: no workers
    answers: list[dict] = []

    def follow() -> None:
        resp = api.get(f"/v1/runs/{run_id}/logs", params={"wait": 30})
        answers.append(resp.json())

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(FOLLOWERS)]
    for t in threads:
        t.start()
    _until(lambda: platform.followers(run_id) == FOLLOWERS, f"{FOLLOWERS} followers waiting")

    # The rest of the API answers while every follower still waits.
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "queued"
    assert len(api.get("/v1/runs").json()) == 1
    assert answers == [] and platform.followers(run_id) == FOLLOWERS

    # The run's own change wakes its followers at once, with the news.
    assert api.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    for t in threads:
        t.join(20)
    assert len(answers) == FOLLOWERS and {a["status"] for a in answers} == {"cancelled"}
    assert platform.followers(run_id) == 0


@pytest.fixture
def two_runs(api: httpx.Client, tmp_path: Path) -> list[str]:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    return [api.post("/v1/runs", json={"agent": "hello"}).json()["id"] for _ in range(2)]


def test_a_follower_wakes_for_its_own_run_only(
    platform: Platform, workspace: tuple[str, str], two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    followed, other = two_runs
    reads: list[str] = []
    real = runs._logs

    def counted(p: Platform, ws: str, run_id: str, offsets: dict[str, int]) -> object:
        reads.append(run_id)
        return real(p, ws, run_id, offsets)

    monkeypatch.setattr(runs, "_logs", counted)
    stop = threading.Event()

    def busy_neighbour() -> None:  # another run writing output all along
        while not stop.is_set():
            platform.notify_runs(other)
            time.sleep(0.001)

    neighbour = threading.Thread(target=busy_neighbour, daemon=True)
    neighbour.start()
    try:
        # A wait shorter than the recheck period: nothing but its end makes it look again.
        logs = anyio.run(runs.follow_logs, platform, workspace[0], followed, {}, runs.FOLLOW_RECHECK * 0.75)
    finally:
        stop.set()
        neighbour.join(10)
    # One look at the start, one at the end of the wait: the neighbour's output woke it never.
    assert (logs.status, logs.stdout, reads, logs.run) == ("queued", "", [followed, followed], None)

    # Its own output wakes it, long before its wait is over.
    result: list[object] = []
    reader = threading.Thread(
        target=lambda: result.append(anyio.run(runs.follow_logs, platform, workspace[0], followed, {}, 30))
    )
    reader.start()
    _until(lambda: platform.followers(followed) == 1, "the reader waiting")
    with platform.store.session() as s:
        s.add(RunOutputRow(run_id=followed, stream="stdout", start=0, data=b"news\n"))
    platform.notify_runs(followed)
    reader.join(20)
    assert [r.stdout for r in result] == ["news\n"]  # type: ignore[attr-defined]
    assert platform.followers(followed) == 0


def test_a_change_wakes_a_follower_at_once_not_at_its_next_look(
    platform: Platform, workspace: tuple[str, str], two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notifying thread wakes the waiting reader itself: with its periodic looks made an
    hour apart, a change still ends its wait (what `orch run` waits for after a run's end)."""
    followed = two_runs[0]
    monkeypatch.setattr(runs, "FOLLOW_POLL", 3600.0)
    monkeypatch.setattr(runs, "FOLLOW_RECHECK", 3600.0)
    result: list[object] = []
    reader = threading.Thread(
        target=lambda: result.append(anyio.run(runs.follow_logs, platform, workspace[0], followed, {}, 30)),
        daemon=True,
    )
    reader.start()
    _until(lambda: platform.followers(followed) == 1, "the reader waiting")
    with platform.store.session() as s:
        s.add(RunOutputRow(run_id=followed, stream="stdout", start=0, data=b"news\n"))
    platform.notify_runs(followed)
    reader.join(20)
    assert [r.stdout for r in result] == ["news\n"]  # type: ignore[attr-defined]
    assert platform.followers(followed) == 0 and platform._wakers == {}


def _follow_in_thread(
    platform: Platform, ws_id: str, run_id: str, wait: float
) -> tuple[threading.Thread, list]:
    result: list = []
    reader = threading.Thread(
        target=lambda: result.append(anyio.run(runs.follow_logs, platform, ws_id, run_id, {}, wait)),
        daemon=True,
    )
    reader.start()
    _until(lambda: platform.followers(run_id) == 1, "the reader waiting")
    return reader, result


def _store(platform: Platform, run_id: str, stream: str, data: bytes) -> None:
    with platform.store.session() as s:
        start = run_output_sizes(s, run_id)[stream]
        s.add(RunOutputRow(run_id=run_id, stream=stream, start=start, data=data))
    platform.notify_runs(run_id)


def test_the_platforms_notes_wait_for_the_agents_output_to_go_with_them(
    platform: Platform, workspace: tuple[str, str], two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short run's follower gets its notes and its output in one answer, not two."""
    followed = two_runs[0]
    monkeypatch.setattr(runs, "NOTE_LINGER", 3600.0)
    reader, result = _follow_in_thread(platform, workspace[0], followed, 30)
    _store(platform, followed, "log", b"\xe2\x86\x92 environment python (default)\n")
    time.sleep(0.3)
    assert result == [] and platform.followers(followed) == 1  # the note alone: still waiting
    _store(platform, followed, "stdout", b"hi\n")
    reader.join(20)
    [logs] = result
    assert (logs.log, logs.stdout, logs.status) == ("→ environment python (default)\n", "hi\n", "queued")


def test_a_note_alone_is_answered_after_its_moment(
    platform: Platform, workspace: tuple[str, str], two_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    followed = two_runs[0]
    monkeypatch.setattr(runs, "NOTE_LINGER", 0.2)
    began = time.monotonic()
    reader, result = _follow_in_thread(platform, workspace[0], followed, 30)
    _store(platform, followed, "log", b"Waiting for the environment big to build\n")
    reader.join(20)
    [logs] = result
    assert (logs.log, logs.stdout) == ("Waiting for the environment big to build\n", "")
    assert time.monotonic() - began < 10  # its moment, not the follower's 30 s wait


def test_a_runs_end_answers_at_once_with_the_notes_waiting(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    two_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    followed = two_runs[0]
    monkeypatch.setattr(runs, "NOTE_LINGER", 3600.0)
    reader, result = _follow_in_thread(platform, workspace[0], followed, 30)
    _store(platform, followed, "log", b"a note\n")
    assert api.post(f"/v1/runs/{followed}/cancel").status_code == 200
    reader.join(20)
    [logs] = result
    assert (logs.log, logs.status, logs.run.status) == ("a note\n", "cancelled", "cancelled")


def test_until_followed_waits_for_the_readers_to_go(platform: Platform) -> None:
    assert platform.until_followed("run_nobody", 30)  # none: at once
    left: list[bool] = []
    with platform.following("run_a"):
        assert not platform.until_followed("run_a", 0.05)  # one stays: the wait ends unmet
        waiter = threading.Thread(target=lambda: left.append(platform.until_followed("run_a", 30)))
        waiter.start()
        time.sleep(0.05)
        assert left == []
    waiter.join(10)
    assert left == [True]


def test_a_runs_end_waits_for_its_followers_only_on_an_idle_server(
    platform: Platform,
    workspace: tuple[str, str],
    two_runs: list[str],
    fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run's end, once recorded, waits (END_READ at most) for its followers to read it before
    its sandbox is removed, unless other sandboxes are open: then the server is busy, and
    nothing waits."""
    waits: list[tuple[str, float]] = []
    monkeypatch.setattr(platform, "until_followed", lambda run_id, timeout: waits.append((run_id, timeout)))

    def exits(
        spec: ContainerSpec, out: Callable[[bytes], None], err: Callable[[bytes], None]
    ) -> ContainerExit:
        return ContainerExit(0)

    fake_engine.behaviour = exits
    first = run_worker.claim(platform)
    assert first is not None
    run_worker.execute(platform, first)
    assert waits == [(first, run_worker.END_READ)]
    metrics.of(platform).sandbox_opened()  # another sandbox of this server's
    try:
        second = run_worker.claim(platform)
        assert second is not None
        run_worker.execute(platform, second)
    finally:
        metrics.of(platform).sandbox_closed()
    assert waits == [(first, run_worker.END_READ)]
    assert [runs.show(platform, workspace[0], r).status for r in (first, second)] == ["succeeded"] * 2
