"""A store whose disk is full (docs/architecture.md): a run whose end the store refuses is asked
again and settles once the store has room, its worker going on either way; one refused longer
is held on the platform and recorded at a later pass of the run queue, without a restart
(workers/runs.py); the API answers 503 with the fix, not a 500 "bug" (server/app.py,
errors.store_full)."""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.errors import store_full
from orch.services.platform import Platform
from orch.workers import runs as run_worker
from orch.workers.queue import QueueWorkers
from tests import refusing_store
from tests.api.test_agents_runs import bundle, publish, run
from tests.refusing_store import FULL, LOCKED, no_pauses


def refuse(platform: Platform, times: int, when: Callable[[str], bool]) -> list[str]:
    """Make the store answer `times` of the statements `when` picks as a full disk does; the
    list returned holds those it refused."""
    return refusing_store.refuse(platform, times, when, FULL)


def ends_a_run(statement: str) -> bool:
    return statement.lstrip().upper().startswith("UPDATE RUNS") and "finished_at" in statement


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pauses(monkeypatch)


def says_hi_and_exits_3(fake_engine: FakeEngine, started: threading.Event | None = None) -> None:
    """The sandbox writes "hi" and exits 3: an end of its own, not what a recovery records;
    `started` is set as it starts."""

    def behaviour(
        _spec: ContainerSpec, out: Callable[[bytes], None], _err: Callable[[bytes], None]
    ) -> ContainerExit:
        if started is not None:
            started.set()
        out(b"hi\n")
        return ContainerExit(3)

    fake_engine.behaviour = behaviour


def refused_past_the_pauses(api: httpx.Client, platform: Platform) -> str:
    """A run whose end the store refused at every try of its worker (the first and the three
    again); the worker went on, the run is still `running`, and the store has room again."""
    refused = refuse(platform, 4, ends_a_run)
    stuck = api.post("/v1/runs", json={"agent": "printer"}).json()["id"]
    run_id = run_worker.claim(platform)
    assert run_id is not None and run_id == stuck
    run_worker.execute(platform, run_id)  # raises nothing
    assert len(refused) == 4
    assert api.get(f"/v1/runs/{stuck}").json()["status"] == "running"
    return run_id


def test_a_run_whose_end_the_store_refused_a_while_is_recorded_once_it_has_room(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    refused = refuse(platform, 3, ends_a_run)
    r = run(api, platform, "printer")
    assert len(refused) == 3
    assert (r["status"], r["exit_code"]) == ("succeeded", 0), r
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert "environment" in str(logs), logs  # its output, kept through the refused tries


def test_a_run_whose_end_the_store_always_refused_leaves_the_worker_going(
    api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    monkeypatch.setattr(run_worker, "UNRECORDED_RUNS", 0)  # none held: as a stopped server's
    stuck = refused_past_the_pauses(api, platform)
    # The store has room again: the next run is run and recorded.
    r = run(api, platform, "printer")
    assert r["status"] == "succeeded", r
    assert api.get(f"/v1/runs/{stuck}").json()["status"] == "running"  # for `recover` to settle
    # The next start settles the one left running.
    assert stuck in run_worker.recover(platform)
    assert api.get(f"/v1/runs/{stuck}").json()["status"] == "failed"


def test_a_run_whose_end_the_store_refused_longer_ends_as_it_ended_once_the_store_has_room(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No restart: the run queue's next pass records the held end, with its own exit code, reason
    and output (it stayed `running` until the next start before)."""
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    says_hi_and_exits_3(fake_engine)
    stuck = refused_past_the_pauses(api, platform)
    workers = QueueWorkers(  # the run queue's loop, without the start's `recover`
        "run",
        claim=lambda: run_worker.claim(platform),
        work=lambda run_id: run_worker.execute(platform, run_id),
        recover=lambda: None,
        wake=platform.wake_runs,
        poll=0.01,
    )
    with caplog.at_level(logging.INFO, logger="orch.workers.runs"):
        workers.start()
        try:
            ended = threading.Event()
            with platform.following(stuck, ended.set):
                for _ in range(100):  # each wait ends at the run's next change
                    shown = api.get(f"/v1/runs/{stuck}").json()
                    if shown["status"] != "running":
                        break
                    ended.wait(0.2)
                    ended.clear()
        finally:
            workers.stop()
    assert (shown["status"], shown["exit_code"], shown["reason"]) == ("failed", 3, "exit code 3"), shown
    logs = api.get(f"/v1/runs/{stuck}/logs").json()
    assert logs["stdout"] == "hi\n" and "environment" in logs["log"], logs
    assert any(f"run {stuck}: its end (failed) was recorded" in m for m in caplog.messages), caplog.messages
    assert stuck not in run_worker.recover(platform)  # nothing left for the next start


def test_a_held_end_beyond_the_output_bound_is_recorded_without_its_waiting_output(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    monkeypatch.setattr(run_worker, "UNRECORDED_OUTPUT", 0)  # no output may wait in memory
    full = threading.Event()  # from the sandbox's start on, the store takes no output either
    says_hi_and_exits_3(fake_engine, full)
    refuse(
        platform, 10**6, lambda st: full.is_set() and st.lstrip().upper().startswith("INSERT INTO RUN_OUTPUT")
    )
    stuck = refused_past_the_pauses(api, platform)
    full.clear()
    assert run_worker.claim(platform) is None  # a pass of the queue: the end is recorded
    shown = api.get(f"/v1/runs/{stuck}").json()
    assert (shown["status"], shown["exit_code"], shown["truncated"]) == ("failed", 3, True), shown
    logs = api.get(f"/v1/runs/{stuck}/logs").json()
    assert logs["stdout"] == "", logs
    assert "of this run's output were dropped: the store refused them" in logs["log"], logs


def test_a_stopping_server_leaves_a_held_end_to_recover(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    stuck = refused_past_the_pauses(api, platform)
    platform.stopping.set()
    assert run_worker.record_held(platform) == 0
    assert api.get(f"/v1/runs/{stuck}").json()["status"] == "running"
    assert stuck in run_worker.recover(platform)  # the next start's
    assert api.get(f"/v1/runs/{stuck}").json()["status"] == "failed"


def test_a_full_store_answers_503_with_the_fix(api: httpx.Client, platform: Platform) -> None:
    refuse(platform, 1, lambda statement: statement.lstrip().upper().startswith("INSERT INTO SECRETS"))
    resp = api.put("/v1/secrets/FULLTEST", json={"value": "v"})
    assert resp.status_code == 503, resp.text
    said = resp.json()
    assert said["error"] == "store_full" and "disk is full" in said["message"], said
    assert "Free space" in said["fix"] and "bug" not in said["fix"], said
    assert api.put("/v1/secrets/FULLTEST", json={"value": "v"}).status_code == 200  # room again


def test_a_busy_store_answers_503_store_busy_with_the_fix(
    api: httpx.Client, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that waited out SQLite's lock (or that PostgreSQL chose to end a deadlock): was a
    bug's 500 and its traceback."""
    refusing_store.refuse(
        platform, 1, lambda st: st.lstrip().upper().startswith("INSERT INTO SECRETS"), LOCKED
    )
    with caplog.at_level(logging.WARNING):
        resp = api.put("/v1/secrets/BUSYTEST", json={"value": "v"})
    assert resp.status_code == 503, resp.text
    said = resp.json()
    assert said["error"] == "store_busy" and "busy" in said["message"], said
    assert said["fix"] == "Try again in a moment." and resp.headers["retry-after"] == "1", said
    assert all(r.exc_info is None for r in caplog.records), caplog.messages  # one line, no traceback
    assert api.put("/v1/secrets/BUSYTEST", json={"value": "v"}).status_code == 200  # and again: taken


def test_any_other_store_error_is_still_a_500(api: httpx.Client, app: FastAPI, platform: Platform) -> None:
    def locked(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO SECRETS"):
            raise OperationalError(statement, params, sqlite3.OperationalError("disk I/O error"))

    event.listen(platform.store.db, "before_cursor_execute", locked)
    # The server answers, then raises the error on for its log: read the answer.
    api._transport._transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[attr-defined]
    resp = api.put("/v1/secrets/FULLTEST", json={"value": "v"})
    assert resp.status_code == 500 and resp.json()["error"] == "internal", resp.text


class PgDiskFull(Exception):
    sqlstate = "53100"


def test_each_stores_full_disk_is_told() -> None:
    assert store_full(OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full")))
    assert store_full(OperationalError("INSERT", {}, PgDiskFull("could not extend file")))
    assert store_full(OSError(errno.ENOSPC, "No space left on device"))
    wrapped = RuntimeError("writing failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert store_full(wrapped)
    assert store_full(OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))) is None
    assert store_full(OSError(errno.EACCES, "Permission denied")) is None
    assert store_full(ValueError("database or disk is full")) is None


def test_a_held_end_is_recorded_with_the_time_the_run_ended_not_when_the_store_took_it(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """A 16 s run whose end waited out a full disk showed the outage's length (found by a tester)."""
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    stuck = refused_past_the_pauses(api, platform)
    held_until = datetime.now(UTC)  # its end was held by then: recorded at the next pass, below
    assert run_worker.claim(platform) is None  # the queue's next pass records it
    shown = api.get(f"/v1/runs/{stuck}").json()
    assert shown["status"] == "succeeded", shown
    assert datetime.fromisoformat(shown["finished_at"]) < held_until, shown


def test_a_stop_while_the_store_refuses_an_end_is_one_line_not_a_traceback(
    api: httpx.Client, platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The run is left `running` for the next start's `recover`, as documented: a line says so
    (4 chained tracebacks said it, found by a tester)."""
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    refuse(platform, 100, lambda st: ends_a_run(st) or "INSERT INTO RUN_LOGS" in st.upper())
    run_id = api.post("/v1/runs", json={"agent": "printer"}).json()["id"]
    assert run_worker.claim(platform) == run_id
    real_end = run_worker._end

    def stopping_at_the_end(*args: Any) -> bool:
        platform.stopping.set()  # the server stops as the store refuses the end
        return real_end(*args)

    run_worker._end = stopping_at_the_end  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.INFO, logger="orch.workers.runs"):
            run_worker.execute(platform, run_id)
    finally:
        run_worker._end = real_end  # type: ignore[assignment]
        platform.stopping.clear()
    said = [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records if run_id in r.getMessage()]
    assert said and not any(tb for _, _, tb in said), said
    assert any("its end could not be recorded (its disk is full)" in m for _, m, _ in said), said
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "running"  # for `recover`


def test_a_run_whose_bundle_meets_a_full_disk_fails_saying_so_without_a_traceback(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its bundle is extracted under ORCH_HOME, the store's disk: ENOSPC there logged "crashed"
    and a traceback per run (found by a tester)."""
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201

    def full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_worker, "extracted_bundle", full)
    with caplog.at_level(logging.INFO, logger="orch.workers.runs"):
        r = run(api, platform, "printer")
    assert (r["status"], r["reason"]) == ("failed", "the store's disk was full"), r
    assert not any(rec.exc_info for rec in caplog.records), caplog.messages
    assert not any("crashed" in m for m in caplog.messages), caplog.messages


class _Clock:
    """The runs module's clock, moved by the test (each refusal of the store: 10 s)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleep = time.sleep

    def monotonic(self) -> float:
        return self.now


def test_a_held_end_s_log_line_counts_from_its_first_refusal(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It counted from the moment the end was held, after the pauses: "26 s" for an end first
    refused 180 s before (found by a tester)."""
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    clock = _Clock()
    monkeypatch.setattr(run_worker, "time", clock)

    def ends_a_run_later(statement: str) -> bool:
        if ends_a_run(statement):
            clock.now += 10  # each refusal of the end: 10 s on
            return True
        return False

    refused = refuse(platform, 4, ends_a_run_later)  # the first try and the three again
    run_id = api.post("/v1/runs", json={"agent": "printer"}).json()["id"]
    assert run_worker.claim(platform) == run_id
    run_worker.execute(platform, run_id)
    assert len(refused) == 4
    with caplog.at_level(logging.INFO, logger="orch.workers.runs"):
        assert run_worker.claim(platform) is None  # the next pass records it
    said = [m for m in caplog.messages if f"run {run_id}: its end (succeeded) was recorded" in m]
    assert said == [
        f"run {run_id}: its end (succeeded) was recorded, 50 s after the store first refused it"
    ], said
