"""/v1/runs: start runs of agents, follow their output, cancel them."""

from __future__ import annotations

import time

from fastapi import Query, Request
from pydantic import Field

from orch import metrics
from orch.server.api.deps import Body, PlatformDep, Reference, WorkspaceDep, api_router, asked_again
from orch.services import runs
from orch.services.views import RunLogs, RunView

router = api_router("runs")


class StartRun(Body):
    agent: Reference = Field(max_length=200, description="Agent name or id; its latest version runs.")
    input: str = Field("", description="Given to the agent on stdin and in ORCH_INPUT.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    timeout: int | None = Field(None, description="Wall-clock limit in seconds (default: the manifest's).")
    id: str | None = Field(
        None,
        max_length=200,  # a bound; a longer one than the server makes is told so by chosen_id
        description="The run's id, chosen by the caller as the server makes them (run_ and 10 of "
        "0-9a-z without i, l, o, u; default: the server's). A caller whose create was cut short "
        "before it read the answer cancels the run by it (POST /runs/{id}/cancel; 404: it was never "
        "made). One taken already, by any workspace's run: 409.",
    )


@router.post("/runs", response_model=RunView, status_code=201)
def start_run(body: StartRun, platform: PlatformDep, ws: WorkspaceDep) -> RunView:
    """Queue a run in a fresh sandbox; poll it, or follow /runs/{id}/logs."""
    started = time.perf_counter()
    view = runs.create(platform, ws, body.agent, body.input, body.env, body.timeout, run_id=body.id)
    # Once per run: a refused request (an unknown agent, a bad timeout) is no run's phase.
    metrics.of(platform).phase("api", time.perf_counter() - started)
    return view


@router.get("/runs", response_model=list[RunView])
def list_runs(
    platform: PlatformDep,
    ws: WorkspaceDep,
    agent: str | None = Query(None, description="Only this agent's runs."),
    limit: int = Query(50, ge=1, le=500),
    before: str | None = Query(
        None, max_length=200, description="A run's id: only runs queued before it (the page after its page)."
    ),
) -> list[RunView]:
    """Runs, newest first; the next page with `before` = the last run's id."""
    return runs.list_runs(platform, ws, agent, limit, before)


@router.get("/runs/{run_id}", response_model=RunView)
def get_run(run_id: str, platform: PlatformDep, ws: WorkspaceDep) -> RunView:
    return runs.show(platform, ws, run_id)


@router.get("/runs/{run_id}/logs", response_model=RunLogs)
async def get_run_logs(
    request: Request,
    run_id: str,
    platform: PlatformDep,
    ws: WorkspaceDep,
    stdout: int = Query(0, ge=0, description="Byte offset in the agent's stdout."),
    stderr: int = Query(0, ge=0, description="Byte offset in the agent's stderr."),
    log: int = Query(0, ge=0, description="Byte offset in the platform's log of the run."),
    # nan and inf: "must be a finite number", not "at most 30".
    wait: float = Query(
        0, ge=0, le=30, allow_inf_nan=False, description="Seconds to wait for new output (long poll)."
    ),
) -> RunLogs:
    """Output from the given offsets; pass the returned offsets back to follow the run."""
    # Async: a long poll waits in the event loop, not on one of the thread pool's 40 threads.
    found = await runs.follow_logs(
        platform, ws, run_id, {"stdout": stdout, "stderr": stderr, "log": log}, wait
    )
    if wait:
        await asked_again(request)
    return found


@router.post("/runs/{run_id}/cancel", response_model=RunView)
def cancel_run(run_id: str, platform: PlatformDep, ws: WorkspaceDep) -> RunView:
    """Cancel a run: at once if queued, else its sandbox is stopped."""
    return runs.cancel(platform, ws, run_id)
