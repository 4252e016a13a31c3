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
from collections.abc import Callable
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
from tests.api.test_agents_runs import bundle, publish, run


def refuse(platform: Platform, times: int, when: Callable[[str], bool]) -> list[str]:
    """Make the store answer `times` of the statements `when` picks as a full disk does; the
    list returned holds those it refused."""
    refused: list[str] = []

    def full(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if when(statement) and len(refused) < times:
            refused.append(statement)
            raise OperationalError(statement, params, sqlite3.OperationalError("database or disk is full"))

    event.listen(platform.store.db, "before_cursor_execute", full)
    return refused


def ends_a_run(statement: str) -> bool:
    return statement.lstrip().upper().startswith("UPDATE RUNS") and "finished_at" in statement


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_worker, "END_RETRY_PAUSES", (0.0, 0.0, 0.0), raising=False)
    monkeypatch.setattr(run_worker, "UNRECORDED_RETRY", 0.0, raising=False)


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
