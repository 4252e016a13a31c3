"""/v1/services: deploy bundles as always-on services, inspect, stop, restart and delete them."""

from __future__ import annotations

from fastapi import Query, Request, Response
from starlette.concurrency import run_in_threadpool

from orch.server.api.deps import PlatformDep, WorkspaceDep, api_router, asked_again
from orch.server.api.uploads import read_bundle_upload
from orch.services import deployed
from orch.services.service_rules import MAX_COMMAND
from orch.services.views import DeploymentView, ServiceLogs, ServiceView

router = api_router("services")


@router.post(
    "/services/{name}/deploy",
    response_model=DeploymentView,
    status_code=201,
    responses={200: {"model": DeploymentView, "description": "Unchanged: the serving version's deployment."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def deploy(
    name: str,
    request: Request,
    response: Response,
    platform: PlatformDep,
    ws: WorkspaceDep,
    command: str | None = Query(
        None,
        max_length=MAX_COMMAND,
        description="The command (default: the manifest's, else the entrypoint's).",
    ),
    public: bool = Query(
        False, description="Let anyone in through the proxy, no token (as `public: true` in orch.yaml)."
    ),
) -> DeploymentView:
    """Deploy a bundle (a gzip'd tar, as `orch service deploy` makes) as the service's next version.
    The deployment runs in the background: poll /v1/services/{name}/deployments/{version}. A bundle,
    command and manifest that the serving version has already answer 200 with that version's
    deployment (`unchanged`: nothing is built or restarted)."""
    body = await read_bundle_upload(request)
    view = await run_in_threadpool(deployed.deploy, platform, ws, name, body, command, public)
    if view.unchanged:
        response.status_code = 200
    return view


@router.get("/services", response_model=list[ServiceView])
def list_services(platform: PlatformDep, ws: WorkspaceDep) -> list[ServiceView]:
    """The workspace's services."""
    return deployed.list_services(platform, ws)


@router.get("/services/{ref}", response_model=ServiceView)
def get_service(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> ServiceView:
    """One service (by name or id): state, uptime, restarts, image, URL, last output."""
    return deployed.show(platform, ws, ref)


@router.get("/services/{ref}/deployments/{version}", response_model=DeploymentView)
def get_deployment(ref: str, version: int, platform: PlatformDep, ws: WorkspaceDep) -> DeploymentView:
    return deployed.deployment(platform, ws, ref, version)


@router.get("/services/{ref}/logs", response_model=ServiceLogs)
async def get_logs(
    request: Request,
    ref: str,
    platform: PlatformDep,
    ws: WorkspaceDep,
    offset: int = Query(0, ge=0, description="Byte offset in the service's output."),
    # nan and inf: "must be a finite number", not "at most 30".
    wait: float = Query(
        0, ge=0, le=30, allow_inf_nan=False, description="Seconds to wait for new output (long poll)."
    ),
) -> ServiceLogs:
    """Output of every container of the service, oldest first; pass `offset` back to follow."""
    # Async: a long poll waits in the event loop, not on one of the thread pool's 40 threads.
    found = await deployed.follow_logs(platform, ws, ref, offset, wait)
    if wait:
        await asked_again(request)
    return found


@router.post("/services/{ref}/stop", response_model=ServiceView)
def stop(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> ServiceView:
    """Stop the service; it stays stopped until restarted, also when a deployment under way ends
    (its version is then current, and the service stopped)."""
    return deployed.stop(platform, ws, ref)


@router.post("/services/{ref}/restart", response_model=ServiceView)
def restart(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> ServiceView:
    """Start the service in a new container (a stopped one too); during a deployment, it undoes a
    stop: the deployment ends with the service running."""
    return deployed.restart(platform, ws, ref)


@router.delete("/services/{ref}")
def delete(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> dict[str, str]:
    """Remove the service, its containers, images and logs."""
    return {"deleted": deployed.delete_service(platform, ws, ref)}
