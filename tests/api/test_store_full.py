"""A store whose disk is full (docs/architecture.md): a run whose end the store refuses is asked
again and settles once the store has room, its worker going on either way (workers/runs.py);
the API answers 503 with the fix, not a 500 "bug" (server/app.py, errors.store_full)."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from orch.errors import store_full
from orch.services.platform import Platform
from orch.workers import runs as run_worker
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
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    refused = refuse(platform, 4, ends_a_run)  # every try: the first and the three again
    stuck = api.post("/v1/runs", json={"agent": "printer"}).json()["id"]
    run_id = run_worker.claim(platform)
    assert run_id == stuck
    run_worker.execute(platform, run_id)  # raises nothing
    assert len(refused) == 4
    assert api.get(f"/v1/runs/{stuck}").json()["status"] == "running"  # for `recover` to settle
    # The store has room again: the next run is run and recorded.
    r = run(api, platform, "printer")
    assert r["status"] == "succeeded", r
    # The next start settles the one left running.
    assert stuck in run_worker.recover(platform)
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
