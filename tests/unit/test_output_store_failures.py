"""Output on its way into a store that refuses writes for a while (services/output_store.py): a
writer's rest refused at its close waits for the flusher, which stores it once the store takes
writes again; the flusher says so once when storing starts failing and once when it works again,
not a traceback at every try."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from orch.models import RunStatus, new_id
from orch.services import build_output, output_store
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.services.run_output import RunOutput
from orch.store.schema import RunOutputRow, RunRow
from tests.conftest import build_log

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo one\n"
LOCKED = "database is locked"


class Refusing:
    """The store's sessions, refusing writes (as a locked SQLite does) while `refusing` is set;
    `tries` counts the sessions refused."""

    def __init__(
        self, platform: Platform, monkeypatch: pytest.MonkeyPatch, bug: Exception | None = None
    ) -> None:
        self.bug = bug  # raised instead of the store's refusal: a bug of the server's
        self.real: Callable[[], AbstractContextManager[Session]] = platform.store.session
        self.refusing = threading.Event()
        self.tries = 0
        monkeypatch.setattr(platform.store, "session", self.session)

    @contextmanager
    def session(self) -> Iterator[Session]:
        if self.refusing.is_set():
            self.tries += 1
            if self.bug is not None:
                raise self.bug
            raise OperationalError("INSERT INTO run_output ...", {}, sqlite3.OperationalError(LOCKED))
        with self.real() as s:
            yield s


def until(done: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)
    return done()


def a_run(platform: Platform, workspace: tuple[str, str], status: RunStatus = RunStatus.RUNNING) -> str:
    with platform.store.session() as s:
        run = RunRow(
            id=new_id("run"),
            workspace_id=workspace[0],
            agent_id="agt_x",
            agent_version_id="ver_x",
            status=status.value,
        )
        s.add(run)
        return run.id


def run_log(platform: Platform, run_id: str) -> str:
    with platform.store.session() as s:
        found = s.scalars(
            select(RunOutputRow.data)
            .where(RunOutputRow.run_id == run_id, RunOutputRow.stream == "log")
            .order_by(RunOutputRow.start)
        )
        return b"".join(found).decode()


@pytest.mark.parametrize("kind", ["run", "build"])
def test_the_rest_a_refused_close_had_is_stored_once_the_store_takes_writes(
    platform: Platform, workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A close whose store failed lost what it had taken: what the run or build printed last was
    missing from its log for good."""
    out: RunOutput | build_output.BuildOutput
    if kind == "run":
        writer_id = a_run(platform, workspace)
        out = RunOutput(platform, writer_id)
    else:
        writer_id = envs.create(platform, workspace[0], "one", DOCKERFILE).build_id or ""
        out = build_output.BuildOutput(platform, writer_id)
    stored = run_log if kind == "run" else build_log
    store = Refusing(platform, monkeypatch)
    store.refusing.set()
    out.line("the last line")
    with pytest.raises(OperationalError):  # the caller learns of it, as before
        out.close()
    assert store.tries >= 1
    store.refusing.clear()  # the store takes writes again: the flusher's next try stores it
    assert until(lambda: "the last line" in stored(platform, writer_id))
    assert stored(platform, writer_id).count("the last line") == 1


@pytest.mark.parametrize("bug", [False, True])
def test_the_flusher_says_once_that_storing_fails_and_once_that_it_works_again(
    platform: Platform,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    bug: bool,
) -> None:
    """Every try while the store refused writes logged a whole traceback, once a second. A store
    that refuses (an OperationalError) gets one plain line; a bug its traceback, once."""
    caplog.set_level(logging.INFO, logger=output_store.__name__)
    run_id = a_run(platform, workspace)
    out = RunOutput(platform, run_id)
    store = Refusing(platform, monkeypatch, RuntimeError(LOCKED) if bug else None)
    store.refusing.set()
    out.line("printed while the store refused")
    assert until(lambda: store.tries >= 3)  # the flusher tried again, and again
    store.refusing.clear()
    assert until(lambda: "printed while the store refused" in run_log(platform, run_id))
    said = [r for r in caplog.records if r.name == output_store.__name__]
    failed = [r for r in said if r.levelno >= logging.WARNING]
    assert len(failed) == 1, [r.getMessage() for r in failed]
    assert bool(failed[0].exc_info) is bug  # the store refusing: a plain line, no traceback
    assert LOCKED in failed[0].getMessage() and "\n" not in failed[0].getMessage()

    def again() -> list[str]:
        return [
            r.getMessage().split(" after ")[0]
            for r in caplog.records
            if r.name == output_store.__name__ and r.levelno == logging.INFO
        ]

    assert until(lambda: bool(again()))  # the flusher's pass ends after the rows are committed
    assert again() == ["stored output again"]
