"""/v1/agents: publish bundles as immutable versions, list, show and delete agents."""

from __future__ import annotations

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool

from orch.server.api.deps import PlatformDep, WorkspaceDep, api_router
from orch.server.api.uploads import read_bundle_upload
from orch.services import agent_deletes, agents
from orch.services.agent_deletes import AgentDeleted
from orch.services.views import AgentView, PublishedView

router = api_router("agents")


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
    body = await read_bundle_upload(request)
    return await run_in_threadpool(agents.publish, platform, ws, name, body, docker)


@router.delete("/agents/{ref}", response_model=AgentDeleted)
def delete_agent(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> AgentDeleted:
    """Delete an agent (by name or id), all its versions and its past runs. Refused while one of
    its runs has not ended."""
    return agent_deletes.delete_agent(platform, ws, ref)


@router.delete("/agents/{ref}/versions/{version}", response_model=AgentDeleted)
def delete_version(ref: str, version: int, platform: PlatformDep, ws: WorkspaceDep) -> AgentDeleted:
    """Delete one version and its past runs; deleting the latest makes the newest remaining one the
    latest. Refused for the agent's only version, and while one of the version's runs has not
    ended."""
    return agent_deletes.delete_version(platform, ws, ref, version)
