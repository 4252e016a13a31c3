"""While the store does not answer (or refuses otherwise: a lock, a full disk), the background
loops that ask it each pass (the queues' claims and their work, workers/queue.py; the idle
sandboxes' sweep, workers/sandboxes.py; the services' supervisor; a cluster's node watch) log one
WARNING line without a traceback when it stops answering and one INFO line when it answers again
(store/refusals.py `Outage`); any other error is still a bug's traceback (errors.store_refused
says which). Found by a tester: 169 tracebacks in 14 s while PostgreSQL was down."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from orch.errors import store_refused
from orch.services import sandboxes
from orch.workers import nodes as node_workers
from orch.workers import supervisor
from orch.workers.queue import QueueWorkers
from orch.workers.sandboxes import Reaper
from tests.refusing_store import FULL, LOCKED, refusal

REFUSED = OperationalError(
    "SELECT 1",
    {},
    psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
    ),
)


class Script:
    """What the store does at each pass: raise the error given, or answer (None); after the last
    pass, `done` is set and every pass answers."""

    def __init__(self, passes: list[BaseException | None]) -> None:
        self.passes = passes
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, *_args: Any, **_kwargs: Any) -> None:
        with self._lock:
            if not self.passes:
                self.done.set()
                return None
            step = self.passes.pop(0)
        if step is not None:
            raise step
        return None


PASSES: list[BaseException | None] = [REFUSED] * 6 + [None, None] + [REFUSED] * 3 + [None]
# Bugs: any other error, an OperationalError that is not the store away among them.
BUGS: list[BaseException | None] = [
    RuntimeError("a bug"),
    OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: runs")),
]


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[int, str, bool]]:
    return [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == logger]


# Each loop that asks the store each pass: started on a script of passes, it returns its stop.
Started = Callable[[Script, pytest.MonkeyPatch], Callable[[], None]]


def claiming(script: Script, _monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    workers = QueueWorkers(
        "run", claim=script, work=lambda _item: None, recover=lambda: None, wake=threading.Event(), poll=0.001
    )
    workers.start()
    return workers.stop


def working(script: Script, _monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """A run's work whose own end the store refused too (so it raised out of `work`)."""
    items = itertools.count()
    workers = QueueWorkers(
        "run",
        claim=lambda: None if script.done.is_set() else f"run_{next(items)}",
        work=script,
        recover=lambda: None,
        wake=threading.Event(),
        poll=0.001,
    )
    workers.start()
    return workers.stop


def in_a_thread(loop: Callable[[], None], stop: threading.Event) -> Callable[[], None]:
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stopped() -> None:
        stop.set()
        thread.join(5)

    return stopped


def sweeping(script: Script, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    monkeypatch.setattr(sandboxes, "reap", script)
    reaper = Reaper(platform=None, poll=0.001)  # type: ignore[arg-type]  # reap is the script's
    return in_a_thread(reaper._reap, reaper._stop)  # its loop, without the start's recovery


def supervising(script: Script, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    monkeypatch.setattr(supervisor, "reconcile", script)
    platform = SimpleNamespace(wake_supervisor=threading.Event())
    supervising = supervisor.Supervisor(platform, poll=0.001)  # type: ignore[arg-type]
    return in_a_thread(supervising._supervise, supervising._stop)  # without the start's sweep


def watching_nodes(script: Script, _monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    ticker = node_workers._Ticker("orch-node-watch", lambda: script() or True, 0.001)
    ticker.start()
    return ticker.stop


LOOPS: list[tuple[Started, str, str]] = [  # the loop, its logger, what its lines say it does
    (claiming, "orch.workers.queue", "claiming from the run queue"),
    (working, "orch.workers.queue", "working the run queue"),
    (sweeping, "orch.workers.sandboxes", "removing idle sandboxes"),
    (supervising, "orch.workers.supervisor", "supervising services"),
    (watching_nodes, "orch.workers.nodes", "orch-node-watch"),
]


def logged(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    start: Started,
    logger: str,
    passes: list[BaseException | None],
) -> list[tuple[int, str, bool]]:
    """What `start`'s loop logs while its passes meet `passes`."""
    script = Script(passes)
    with caplog.at_level(logging.INFO, logger=logger):
        stop = start(script, monkeypatch)
        try:
            assert script.done.wait(10)
        finally:
            stop()
    return lines(caplog, logger)


@pytest.mark.parametrize(("start", "logger", "doing"), LOOPS, ids=[doing for _, _, doing in LOOPS])
def test_a_loop_logs_one_line_when_the_store_stops_and_one_when_it_answers(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, start: Started, logger: str, doing: str
) -> None:
    said = logged(caplog, monkeypatch, start, logger, [*PASSES, *BUGS])
    assert [(level, tb) for level, _, tb in said] == [
        (logging.WARNING, False),
        (logging.INFO, False),
        (logging.WARNING, False),
        (logging.INFO, False),
        (logging.ERROR, True),  # bugs: their tracebacks, as before
        (logging.ERROR, True),
    ], said
    assert said[0][1].startswith(f"{doing} failed: the store does not answer"), said
    assert "Connection refused" in said[0][1], said
    assert said[1][1].startswith(f"{doing}: the store answers again"), said


def test_a_store_that_refuses_for_a_while_otherwise_is_one_line_too(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A locked SQLite (its 10 s wait out), a full disk: the store refusing, not a bug (each pass
    logged its traceback: only a store that did not answer at all was one line)."""
    passes = [refusal(LOCKED)] * 3 + [refusal(FULL)] * 2 + [None]
    said = logged(caplog, monkeypatch, claiming, "orch.workers.queue", passes)
    assert [(level, tb) for level, _, tb in said] == [(logging.WARNING, False), (logging.INFO, False)], said
    assert said[0][1].startswith("claiming from the run queue failed: the store refused (database is locked)")


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (REFUSED, True),
        (refusal(LOCKED), True),
        (refusal(FULL), True),
        (OperationalError("SELECT", {}, psycopg.errors.SerializationFailure("could not serialize")), True),
        (BUGS[1], False),  # SQLite's word for a statement orch got wrong
        (RuntimeError("a bug"), False),
    ],
)
def test_what_is_the_store_refusing_and_what_is_a_bug(error: BaseException, refused: bool) -> None:
    assert (store_refused(error) is not None) is refused


def test_sqlites_own_error_for_a_wrong_statement_is_a_bug() -> None:
    """By its code (SQLITE_ERROR), whatever its words."""
    with sqlite3.connect(":memory:") as conn, pytest.raises(sqlite3.OperationalError) as raised:
        conn.execute("SELECT * FROM nowhere")
    assert store_refused(OperationalError("SELECT", {}, raised.value)) is None
