"""/v1/runs/{run_id}/events: the steps of a managed-loop run, listed and followed."""

from __future__ import annotations

from fastapi import Query, Request

from orch.server.api.deps import PlatformDep, WorkspaceDep, api_router, asked_again
from orch.services import run_events
from orch.services.run_events import RunEventView

router = api_router("runs")


@router.get("/runs/{run_id}/events", response_model=list[RunEventView], response_model_exclude_none=True)
async def get_run_events(
    request: Request,
    run_id: str,
    platform: PlatformDep,
    ws: WorkspaceDep,
    after: int = Query(
        0, ge=0, le=2**31 - 1, description="Only events with a greater seq (the last one seen)."
    ),
    # nan and inf: "must be a finite number", not "at most 30".
    wait: float = Query(
        0, ge=0, le=30, allow_inf_nan=False, description="Seconds to wait for one (long poll)."
    ),
    limit: int = Query(run_events.LIST_LIMIT, ge=1, le=run_events.LIST_LIMIT),
) -> list[RunEventView]:
    """Events after `after`, oldest first: model_call, tool_call, tool_result, final. With
    `wait`, answers as soon as there is one, or the run has ended (then an empty list means
    there are no more)."""
    # Async: a long poll waits in the event loop, not on one of the thread pool's 40 threads.
    found = await run_events.follow_events(platform, ws, run_id, after, wait, limit)
    if wait:
        await asked_again(request)
    return found
