"""A server's stop with work in flight (workers/__init__.py, workers/queue.py): the sandboxes of
the runs in flight are ended at once, all together, before the workers are waited for, and the
workers are waited for once, not once each. Before, each worker blocked on its run's sandbox was
joined for 5 s in turn and the sandboxes ended only after: 41 s for 8 running runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from orch.services.platform import Platform
from orch.workers import Workers
from orch.workers.queue import QueueWorkers
from tests.refusing_store import LOCKED, refusal

RUNNING = 8


class Launcher:
    """A runtime whose sandboxes are the blocked workers' runs: `kill` ends them."""

    def __init__(self, events: list[str], ends_runs: threading.Event) -> None:
        self.events = events
        self.ends_runs = ends_runs

    def kill(self, prefix: str) -> list[str]:
        self.events.append("kill")
        self.ends_runs.set()
        return []

    def sweep(self, prefix: str) -> int:
        return 0

    def close(self) -> None:
        self.events.append("close")


class Runs:
    """`RUNNING` queued runs; working one blocks until its sandbox ends (or the test does)."""

    def __init__(self, ended: threading.Event) -> None:
        self.items = [f"run-{i}" for i in range(RUNNING)]
        self.lock = threading.Lock()
        self.running = threading.Semaphore(0)
        self.ended = ended
        self.ended_by_stop: list[str] = []

    def claim(self) -> str | None:
        with self.lock:
            return self.items.pop() if self.items else None

    def work(self, item: str) -> None:
        self.running.release()
        if self.ended.wait(60):
            with self.lock:
                self.ended_by_stop.append(item)


@pytest.fixture
def never() -> Iterator[threading.Event]:
    """Set at the test's end: what blocks on it ends then."""
    event = threading.Event()
    yield event
    event.set()


def _running(runs: Runs, events: list[str]) -> QueueWorkers:
    """A run queue whose `RUNNING` workers are all blocked in a run; each join is recorded in
    `events`: "join" and whether the worker was still busy after it."""
    queue = QueueWorkers(
        "run",
        claim=runs.claim,
        work=runs.work,
        recover=lambda: None,
        wake=threading.Event(),
        count=RUNNING,
        poll=60,
    )
    queue.start()
    for _ in range(RUNNING):
        assert runs.running.acquire(timeout=30)
    for t in queue._threads:
        join = t.join

        def recorded(
            timeout: float | None = None, t: threading.Thread = t, join: Callable[..., None] = join
        ) -> None:
            join(timeout)
            events.append(f"join {'busy' if t.is_alive() else 'ended'} {timeout:.2f}")

        t.join = recorded  # type: ignore[method-assign]
    return queue


def test_a_stop_ends_the_runs_sandboxes_before_it_waits_for_their_workers(platform: Platform) -> None:
    events: list[str] = []
    runs_end = threading.Event()
    runs = Runs(runs_end)
    platform.launchers = {"runc": Launcher(events, runs_end)}  # type: ignore[dict-item]
    workers = Workers(platform)
    workers.queues = [_running(runs, events)]
    workers.stop()
    # Every run's sandbox was ended first, so no worker was still busy when it was waited for.
    first_join = next(i for i, e in enumerate(events) if e.startswith("join"))
    assert events[:first_join] == ["close", "kill"]
    assert [e.split()[1] for e in events if e.startswith("join")] == ["ended"] * RUNNING
    assert sorted(runs.ended_by_stop) == sorted(f"run-{i}" for i in range(RUNNING))


def test_busy_workers_are_waited_for_once_not_once_each(never: threading.Event) -> None:
    """Workers that do not end (a sandbox the stop cannot end): the stop waits `timeout` for
    them all together, then goes on without them."""
    events: list[str] = []
    runs = Runs(never)
    queue = _running(runs, events)
    queue.stop(timeout=0.5)
    waits = [float(e.split()[2]) for e in events]
    assert len(waits) == RUNNING and all(e.split()[1] == "busy" for e in events)
    assert sum(waits) <= 0.5  # before: 0.5 each, 4 s for the 8


def test_a_stop_whose_records_the_store_refuses_still_ends_every_sandbox(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A busy store (another process's write lock past SQLite's wait) refused the first record of
    the stop, the sandboxes on demand's, and the stop ended there: a sandbox outlived the server,
    and the log had a traceback (found by a tester). Each step now goes on after a refusal."""
    events: list[str] = []
    platform.launchers = {"runc": Launcher(events, threading.Event())}  # type: ignore[dict-item]
    workers = Workers(platform)
    workers.queues = []

    def refused() -> None:
        events.append("refused")
        raise refusal(LOCKED, "UPDATE sandboxes SET status=?")

    monkeypatch.setattr(workers.reaper, "stop", refused)
    monkeypatch.setattr(workers.supervisor, "stop", refused)
    swept: list[str] = []
    monkeypatch.setattr("orch.workers.sweep_all", lambda launchers, prefix: swept.append(prefix))
    with caplog.at_level(logging.WARNING, logger="orch.workers"):
        workers.stop()
    assert events == ["refused", "refused", "close", "kill"] and swept == [platform.container_prefix]
    said = [r for r in caplog.records if r.name == "orch.workers"]
    assert len(said) == 2 and not any(r.exc_info for r in said), [r.getMessage() for r in said]
    assert "the store refused (database is locked)" in said[0].getMessage()
