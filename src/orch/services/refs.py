"""Finding an environment, an agent or a service by what a user typed: its id or its name."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from orch.errors import NotFound
from orch.models import shown_name
from orch.store.schema import Base

R = TypeVar("R", bound=Base)


def find(
    s: Session,
    model: type[R],
    ref: str,
    *scope: ColumnElement[bool],
    id_prefix: str,
    what: str,
    fix: str,
    lock: bool = False,
) -> R:
    """The row of `model` (one with `id` and `name` columns) within `scope` whose id is `ref` when
    `ref` starts like its ids do (`id_prefix`, e.g. "env_"), else whose name is; with `lock`,
    locked until the session ends. None found: NotFound, saying `what` is missing and `fix`."""
    column: InstrumentedAttribute[str] = getattr(model, "id" if ref.startswith(id_prefix) else "name")
    query = select(model).where(*scope, column == ref)
    row = s.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"No {what} {shown_name(ref)!r} in this workspace.", fix)
    return row
