"""/v1/agents: publish bundles as immutable versions, list and show agents."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from orch.bundle import MAX_BUNDLE_BYTES
from orch.errors import InvalidInput
from orch.server.api.deps import PlatformDep, WorkspaceDep
from orch.services import agents
from orch.services.views import AgentView, PublishedView

router = APIRouter(prefix="/v1", tags=["agents"])

# The compressed upload may not be larger than what it may unpack to.
MAX_UPLOAD = MAX_BUNDLE_BYTES


@router.get("/agents", response_model=list[AgentView])
def list_agents(platform: PlatformDep, ws: WorkspaceDep) -> list[AgentView]:
    """The workspace's agents, each with its latest version."""
    return agents.list_agents(platform, ws)


@router.get("/agents/{ref}", response_model=AgentView)
def get_agent(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> AgentView:
    """One agent (by name or id) with all its versions, newest first."""
    return agents.show(platform, ws, ref)


@router.post(
    "/agents/{name}/versions",
    response_model=PublishedView,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def publish(
    name: str,
    request: Request,
    platform: PlatformDep,
    ws: WorkspaceDep,
    docker: bool = Query(False, description="Build the bundle's Dockerfile into the agent's environment."),
) -> PublishedView:
    """Publish a bundle (a gzip'd tar, as `orch publish` makes) as the agent's next version."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD:
            raise InvalidInput(
                f"The upload is over the {MAX_UPLOAD // (1024 * 1024)} MiB limit.",
                "Leave large files out with .orchignore and download them at run time.",
            )
    if not body:
        raise InvalidInput("The request has no bundle.", "Send the bundle (a .tar.gz) as the request body.")
    return await run_in_threadpool(agents.publish, platform, ws, name, bytes(body), docker)
