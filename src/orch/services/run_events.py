"""Run events: the steps of a run's managed loop (model calls, tool calls, tool results, the
answer), stored as they happen, numbered from 1 within the run (`seq`), listed from a number on
and followed with a long poll (docs/loop.md, "Events")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from orch.models import RunStatus
from orch.services import runs
from orch.services.platform import Platform
from orch.store.schema import RunEventRow, utcnow

TYPES = ("model_call", "tool_call", "tool_result", "final")
LIST_LIMIT = 1000  # events in one answer, at most


class RunEventView(BaseModel):
    """One event: `seq`, `type`, `at`, and the fields of its type (absent ones are left out)."""

    model_config = ConfigDict(extra="allow")

    seq: int = Field(description="1, 2, ... within the run.")
    type: str = Field(description="model_call, tool_call, tool_result or final.")
    at: datetime
    turn: int | None = Field(None, description="model_call: the model call's number in the run.")
    input_tokens: int | None = Field(None, description="model_call: tokens sent.")
    output_tokens: int | None = Field(None, description="model_call: tokens answered.")
    duration: float | None = Field(None, description="model_call, tool_result: seconds it took.")
    attempts: int | None = Field(None, description="model_call: tries it took (429 and 5xx are retried).")
    text: str | None = Field(
        None, description="model_call: the model's text beside its tool calls; final: the answer."
    )
    call_id: str | None = Field(None, description="tool_call, tool_result: the call's id, which pairs them.")
    name: str | None = Field(None, description="tool_call, tool_result: the tool.")
    arguments: Any = Field(None, description="tool_call: the arguments the model gave (an object).")
    exit_code: int | None = Field(None, description="tool_result: 0 when the tool succeeded.")
    output: str | None = Field(None, description="tool_result: its output, the middle cut when long.")
    refused_calls: int | None = Field(
        None, description="model_call: tool calls beyond the 32 a turn runs, answered with an error."
    )
    truncated: bool | None = Field(None, description="final: true when the answer was cut, as stdout was.")


def append(platform: Platform, run_id: str, type: str, data: Mapping[str, Any]) -> int:
    """Store the run's next event and wake its followers; return its seq. One writer per run
    (the worker running its loop), so the next number is the last one's plus 1."""
    assert type in TYPES and not {"seq", "type", "at"} & data.keys(), (type, data.keys())
    with platform.store.session() as s:
        last = s.scalar(select(func.max(RunEventRow.seq)).where(RunEventRow.run_id == run_id))
        seq = (last or 0) + 1
        s.add(RunEventRow(run_id=run_id, seq=seq, type=type, at=utcnow(), data=json.dumps(data)))
    platform.notify_runs(run_id)
    return seq


def list_events(
    platform: Platform, ws_id: str, run_id: str, after: int = 0, limit: int = LIST_LIMIT
) -> list[RunEventView]:
    """The run's events after `after`, oldest first; NotFound for another workspace's run."""
    runs.show(platform, ws_id, run_id, usage=False)
    return _read(platform, run_id, after, limit)


def _read(platform: Platform, run_id: str, after: int, limit: int) -> list[RunEventView]:
    with platform.store.session() as s:
        rows = s.scalars(
            select(RunEventRow)
            .where(RunEventRow.run_id == run_id, RunEventRow.seq > after)
            .order_by(RunEventRow.seq)
            .limit(max(1, min(limit, LIST_LIMIT)))
        )
        return [RunEventView(seq=r.seq, type=r.type, at=r.at, **json.loads(r.data)) for r in rows]


async def follow_events(
    platform: Platform, ws_id: str, run_id: str, after: int, wait: float, limit: int = LIST_LIMIT
) -> list[RunEventView]:
    """Events after `after`; with `wait`, wait for some (at most `wait` seconds) unless the run
    has ended. An empty answer with the run ended means there are no more."""

    def read() -> tuple[list[RunEventView], bool]:
        ended = RunStatus(runs.show(platform, ws_id, run_id, usage=False).status).final
        return _read(platform, run_id, after, limit), ended

    events, _ended = await runs.long_poll(
        platform, run_id, wait, read, lambda found: 0.0 if found[0] or found[1] else None
    )
    return events
