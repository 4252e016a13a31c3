"""Durable queues in the store: a worker claims the oldest queued row with a conditional UPDATE,
so several workers (or several servers on one PostgreSQL database) never take the same row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, select, update

from orch.store.db import Store
from orch.store.schema import utcnow


def claim(store: Store, model: Any, queued: str, claimed: str) -> str | None:
    """Move the oldest `queued` row of `model` to `claimed` (recording the start and counting the
    attempt) and return its id; None when nothing is queued. `model` has id, status, queued_at,
    started_at and attempts columns."""
    with store.session() as s:
        candidates = s.scalars(
            select(model.id).where(model.status == queued).order_by(model.queued_at).limit(5)
        ).all()
        for row_id in candidates:
            result = s.execute(
                update(model)
                .where(model.id == row_id, model.status == queued)
                .values(status=claimed, started_at=utcnow(), attempts=model.attempts + 1)
            )
            assert isinstance(result, CursorResult)
            if result.rowcount == 1:
                return str(row_id)
    return None
