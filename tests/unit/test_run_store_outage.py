"""A store that does not answer for a while under a run (a PostgreSQL restart, found by a tester):
the run's once-a-second cancel check is no cancel then, asked again at the next, and the run ends
with its own end, its output whole; a move to running the store refuses is asked again, and one
it refuses every time fails the run saying so, never with an exception's repr
(workers/runs.py, docs/architecture.md "A full store")."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from orch.workers import runs as run_worker
from tests.api.conftest import api, app  # noqa: F401 - the API's fixtures, for these runs
from tests.api.test_agents_runs import bundle, publish, run
from tests.refusing_store import no_pauses, refuse


def moves_a_run_to_running(statement: str) -> bool:
    said = " ".join(statement.split()).upper()
    return said.startswith("UPDATE RUNS SET STATUS") and "CONTAINER=" in said.replace(" ", "")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pauses(monkeypatch)


class _Clock:
    """The runs module's clock, a second and a half further at each look: each cancel check the
    sandbox asks is one the store is asked (at most once a second), without waiting seconds."""

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.sleep = time.sleep

    def monotonic(self) -> float:
        self.now += 1.5
        return self.now


def test_a_run_whose_cancel_checks_the_store_refuses_a_while_ends_with_its_own_end(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It failed "internal error: OperationalError": the refused check's error ended its sandbox."""
    assert publish(api, "sleeper", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    monkeypatch.setattr(run_worker, "time", _Clock())
    running = threading.Event()
    refused = refuse(
        platform,
        3,
        lambda st: running.is_set() and st.lstrip().upper().startswith("SELECT RUNS.CANCEL_REQUESTED"),
    )
    checks: list[Callable[[], bool]] = []
    run_container = fake_engine.run_container

    def following(
        spec: ContainerSpec, *args: Any, should_stop: Callable[[], bool] | None = None, **kw: Any
    ) -> Any:
        assert should_stop is not None
        checks.append(should_stop)
        return run_container(spec, *args, should_stop=should_stop, **kw)

    def sleeps(
        _spec: ContainerSpec, out: Callable[[bytes], None], _err: Callable[[bytes], None]
    ) -> ContainerExit:
        out(b"before\n")
        running.set()  # the store goes away
        for _ in range(6):  # as the pump asks while the agent sleeps: three refused, three answered
            assert checks[0]() is False
        out(b"after\n")
        return ContainerExit(0)

    monkeypatch.setattr(fake_engine, "run_container", following)
    fake_engine.behaviour = sleeps
    with caplog.at_level(logging.INFO, logger="orch.workers.runs"):
        r = run(api, platform, "sleeper")
    assert (r["status"], r["exit_code"], r["reason"]) == ("succeeded", 0, None), r
    assert len(refused) == 3
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert logs["stdout"] == "before\nafter\n", logs
    assert "Error" not in logs["log"], logs
    said = [m for m in caplog.messages if r["id"] in m]
    away = [m for m in said if "asking whether it was cancelled failed: the store refused" in m]
    back = [m for m in said if "asking whether it was cancelled: the store answers again" in m]
    assert len(away) == 1 and len(back) == 1, said  # once each, not once a second
    assert not any(rec.exc_info for rec in caplog.records), said  # no traceback


def test_a_run_whose_move_to_running_the_store_refused_a_while_runs(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
) -> None:
    """It failed "internal error: OperationalError" though its agent never started."""
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    refused = refuse(platform, 2, moves_a_run_to_running)
    r = run(api, platform, "printer")
    assert (r["status"], r["exit_code"], r["reason"]) == ("succeeded", 0, None), r
    assert len(refused) == 2
    assert len(fake_engine.containers) == 1  # its agent started once, after the store answered
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert logs["log"].count("→ environment") == 1, logs  # its notes stored once, with the move


def test_a_run_whose_move_to_running_the_store_always_refused_fails_saying_so(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
) -> None:
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    refused = refuse(platform, 4, moves_a_run_to_running)  # the first try and the three again
    r = run(api, platform, "printer")
    assert r["status"] == "failed", r
    assert r["reason"] == "The store did not answer when the run was to start; its agent never started.", r
    assert len(refused) == 4
    assert fake_engine.containers == []  # its agent never started
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert "OperationalError" not in logs["log"] and "internal error" not in logs["log"], logs


def test_a_run_the_store_refused_while_it_was_prepared_fails_without_an_exception_repr(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its reason was "internal error: OperationalError", its log the psycopg error's repr, the
    server's log a traceback."""
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    refused = refuse(platform, 1, lambda st: "JOIN AGENT_VERSIONS" in " ".join(st.split()).upper())
    with caplog.at_level(logging.INFO, logger="orch.workers.runs"):
        r = run(api, platform, "printer")
    assert (r["status"], r["reason"]) == ("failed", "the store did not answer while the run was prepared"), r
    assert len(refused) == 1
    assert fake_engine.containers == []
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert "OperationalError" not in logs["log"] and "internal error" not in logs["log"], logs
    assert not any(rec.exc_info for rec in caplog.records), caplog.messages
