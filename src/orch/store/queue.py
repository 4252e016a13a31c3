"""Durable queues in the store: a worker claims the oldest queued row with a conditional UPDATE,
so several workers (or several servers on one PostgreSQL database) never take the same row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, select, update

from orch.store.db import Store
from orch.store.schema import utcnow


def claim(store: Store, model: Any, queued: str, claimed: str) -> str | None:
    """Move the oldest `queued` row of `model` to `claimed` and return its id; None when nothing
    is queued. `model` has id, status and queued_at columns; when it has started_at and attempts,
    the start is recorded and the attempt counted."""
    with store.session() as s:
        candidates = s.scalars(
            select(model.id).where(model.status == queued).order_by(model.queued_at).limit(5)
        ).all()
        values: dict[str, Any] = {"status": claimed}
        if hasattr(model, "started_at"):
            values["started_at"] = utcnow()
        if hasattr(model, "attempts"):
            values["attempts"] = model.attempts + 1
        for row_id in candidates:
            result = s.execute(
                update(model).where(model.id == row_id, model.status == queued).values(**values)
            )
            assert isinstance(result, CursorResult)
            if result.rowcount == 1:
                return str(row_id)
    return None
