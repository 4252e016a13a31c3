"""A store that refuses, for the tests of what orch does then (store/refusals.py): its errors as
SQLAlchemy raises them, statements refused as they are sent, and no pauses between asks."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from orch.services.platform import Platform
from orch.store import refusals
from orch.workers import runs as run_worker

# What a store says when it refuses, each as its driver's error: a PostgreSQL restart (given as
# SQLite's error: the type is the driver's, the words are what matter), a full disk, a lock.
GONE = "server closed the connection unexpectedly"
FULL = "database or disk is full"
LOCKED = "database is locked"


def refusal(said: str = GONE, statement: str = "SELECT 1", params: Any = None) -> OperationalError:
    """The store refusing `statement`, saying `said`, as SQLAlchemy raises it."""
    return OperationalError(statement, params or {}, sqlite3.OperationalError(said))


def refuse(platform: Platform, times: int, when: Callable[[str], bool], said: str = GONE) -> list[str]:
    """Make the store refuse `times` of the statements `when` picks, saying `said`; the list
    returned holds those it refused."""
    refused: list[str] = []

    def refusing(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if when(statement) and len(refused) < times:
            refused.append(statement)
            raise refusal(said, statement, params)

    event.listen(platform.store.db, "before_cursor_execute", refusing)
    return refused


def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused write is asked again at once (three times, not nine), and what is held is asked
    again at every pass of the run queue."""
    monkeypatch.setattr(refusals, "PAUSES", (0.0, 0.0, 0.0))
    monkeypatch.setattr(run_worker, "UNRECORDED_RETRY", 0.0)
