"""Durable queues in the store: a worker claims the oldest queued row with a conditional UPDATE,
so several workers (or several servers on one PostgreSQL database) never take the same row."""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, bindparam, or_, select, update

from orch.models import BuildStatus, RunStatus, advance
from orch.store.db import Store
from orch.store.schema import utcnow


def claim(
    store: Store, model: Any, queued: StrEnum, claimed: StrEnum, by: str, also: dict[str, Any] | None = None
) -> str | None:
    """Move the oldest `queued` row of `model` to `claimed`, on behalf of platform instance `by`,
    and return its id; None when nothing is queued. `model` has id, status, claimed_by and
    queued_at columns; when it has started_at and attempts, the start is recorded and the
    attempt counted; `also` holds more columns to set (a node's claim records the node). A claim
    is a status change: for builds and runs, their table must allow it."""
    _check_move(queued, claimed)
    pick, take = _statements(store.db.dialect.name, model, str(queued), str(claimed), tuple(also or ()))
    params = {"p_by": by, "p_now": utcnow(), **{f"p_{k}": v for k, v in (also or {}).items()}}
    with store.db.begin() as conn:
        # Other workers may take every candidate between the SELECT and the UPDATEs: look again
        # rather than report an empty queue. On SQLite the first UPDATE holds the write lock, so
        # the second look sees every claim; on PostgreSQL the locked row is ours.
        for _look in range(3):
            candidates = conn.execute(pick).scalars().all()
            if not candidates:
                return None
            for row_id in candidates:
                result = conn.execute(take, {**params, "p_id": row_id})
                if result.rowcount == 1:
                    return str(row_id)
    return None


@functools.cache
def _statements(
    dialect: str, model: Any, queued: str, claimed: str, also: tuple[str, ...]
) -> tuple[Any, Any]:
    """A claim's SELECT of candidates and its conditional UPDATE, built once per queue (they run
    at every claim; building them cost more than running them)."""
    # The columns hold plain text.
    pick = select(model.id).where(model.status == queued).order_by(model.queued_at, model.id)
    # On PostgreSQL the conditional UPDATE alone is exclusive under READ COMMITTED too, but
    # every worker would wait on the lock of the same oldest row; SKIP LOCKED hands each one
    # another row at once, locked until its UPDATE commits.
    postgresql = dialect == "postgresql"
    pick = pick.limit(1).with_for_update(skip_locked=True) if postgresql else pick.limit(5)
    values: dict[str, Any] = {"status": claimed, "claimed_by": bindparam("p_by")}
    values.update({k: bindparam(f"p_{k}") for k in also})
    if hasattr(model, "started_at"):
        values["started_at"] = bindparam("p_now")
    if hasattr(model, "attempts"):
        values["attempts"] = model.attempts + 1
    take = update(model).where(model.id == bindparam("p_id"), model.status == queued).values(**values)
    return pick, take


def claim_one(
    store: Store, model: Any, row_id: str, queued: StrEnum, claimed: StrEnum, by: str, also: dict[str, Any]
) -> bool:
    """Claim the row `row_id` of `model` as `claim` would, if it is still `queued`: for a claimer
    that chose among the queued rows itself (a cluster node prefers runs whose image it holds)."""
    _check_move(queued, claimed)
    with store.session() as s:
        result = s.execute(
            update(model)
            .where(model.id == row_id, model.status == str(queued))
            .values(**_claimed(model, claimed, by, also))
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1


def _claimed(model: Any, claimed: StrEnum, by: str, also: dict[str, Any] | None) -> dict[str, Any]:
    """The columns a claim sets."""
    values: dict[str, Any] = {"status": str(claimed), "claimed_by": by, **(also or {})}
    if hasattr(model, "started_at"):
        values["started_at"] = utcnow()
    if hasattr(model, "attempts"):
        values["attempts"] = model.attempts + 1
    return values


def _check_move(queued: StrEnum, claimed: StrEnum) -> None:
    # Deployments' statuses have no table of moves; builds' and runs' do (models.py).
    if isinstance(claimed, BuildStatus):
        advance(queued, claimed)
    if isinstance(claimed, RunStatus):
        advance(queued, claimed)


def left_by(model: Any, instance: str) -> ColumnElement[bool]:
    """Rows a server of platform `instance` may settle at its start: those it claimed itself in
    an earlier life (and unclaimed ones from before claims were recorded), not another server's."""
    return or_(model.claimed_by == instance, model.claimed_by.is_(None))
