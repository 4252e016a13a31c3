"""/v1/workspaces and /v1/tokens: tenants and their API tokens.

An admin token manages every workspace; any other token sees and manages its own workspace's
tokens only. A token's text is shown once, when it is created; the store keeps its SHA-256."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import Field

from orch.errors import InvalidInput
from orch.server.api.deps import (
    ADMIN,
    NAME_FIELD,
    Body,
    CallerDep,
    PlatformDep,
    Reference,
    api_router,
    name_rule,
)
from orch.services import workspace_deletes, workspaces
from orch.services.views import NewTokenView, NewWorkspaceView, TokenView, WorkspaceView

router = api_router("workspaces")


class CreateWorkspace(Body):
    name: Annotated[str, name_rule("Workspace name")] = Field(
        max_length=NAME_FIELD, description="Lower-case name, unique on the platform."
    )


class CreateToken(Body):
    name: Annotated[str, name_rule("Token name")] = Field(
        max_length=NAME_FIELD, description="What the token is for, e.g. 'ci'."
    )
    workspace: Reference | None = Field(
        None, max_length=200, description="Workspace name or id (admin tokens only; default: your own)."
    )
    admin: bool = Field(False, description="An admin token (admin tokens only).")


@router.post(
    "/workspaces",
    response_model=NewWorkspaceView,
    status_code=201,
    openapi_extra={ADMIN: "create workspaces"},  # checked before the body is read (deps.ApiRoute)
)
def create_workspace(body: CreateWorkspace, platform: PlatformDep, caller: CallerDep) -> NewWorkspaceView:
    """Create a workspace (admin tokens only); the answer holds its first token, shown this once."""
    return workspaces.new_workspace(platform, caller, body.name)


@router.get("/workspaces", response_model=list[WorkspaceView])
def list_workspaces(platform: PlatformDep, caller: CallerDep) -> list[WorkspaceView]:
    """Every workspace for an admin token; the token's own workspace otherwise."""
    return workspaces.list_workspaces(platform, caller)


@router.delete(
    "/workspaces/{name}",
    response_model=workspace_deletes.WorkspaceDeleted,
    # No body, so the service checks it (as first thing); the schema says it for the walkers.
    openapi_extra={ADMIN: "delete workspaces"},
)
def delete_workspace(
    name: str, platform: PlatformDep, caller: CallerDep
) -> workspace_deletes.WorkspaceDeleted:
    """Delete a workspace (by name or id) and everything of it (admin tokens only). Refused for
    the caller's own workspace, for the one holding the last admin tokens, and while a run,
    sandbox, service or build of it has not ended."""
    return workspace_deletes.delete_workspace(platform, caller, name)


def _named(workspace: str | None) -> str | None:
    """The workspace a token call names (None: the caller's own). An empty one names none, and
    is refused: taken for the caller's own, an admin who meant another workspace acted on theirs."""
    if workspace == "":
        raise InvalidInput(
            "The workspace given is empty, which names no workspace.",
            "Give a workspace's name or id, or leave workspace out for your token's own.",
        )
    return workspace


@router.post("/tokens", response_model=NewTokenView, status_code=201)
def create_token(body: CreateToken, platform: PlatformDep, caller: CallerDep) -> NewTokenView:
    """Create a token for your workspace (an admin token: for any workspace); shown this once."""
    return workspaces.new_token(platform, caller, _named(body.workspace), body.name, body.admin)


@router.get("/tokens", response_model=list[TokenView])
def list_tokens(
    platform: PlatformDep,
    caller: CallerDep,
    workspace: str | None = Query(None, max_length=200, description="Only this workspace's (admin)."),
) -> list[TokenView]:
    """Tokens' ids, names and workspaces, never the tokens themselves."""
    return workspaces.list_tokens(platform, caller, _named(workspace))


@router.delete("/tokens/{token_id}", response_model=TokenView)
def revoke_token(token_id: str, platform: PlatformDep, caller: CallerDep) -> TokenView:
    """Revoke a token: the next request that sends it is refused."""
    return workspaces.revoke_token(platform, caller, token_id)
