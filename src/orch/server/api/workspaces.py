"""/v1/workspaces and /v1/tokens: tenants and their API tokens.

An admin token manages every workspace; any other token sees and manages its own workspace's
tokens only. A token's text is shown once, when it is created; the store keeps its SHA-256."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from orch.server.api.deps import CallerDep, PlatformDep, Reference
from orch.services import workspaces
from orch.store.schema import TokenRow, WorkspaceRow

router = APIRouter(prefix="/v1", tags=["workspaces"])


class CreateWorkspace(BaseModel):
    name: str = Field(max_length=200, description="Lower-case name, unique on the platform.")


class CreateToken(BaseModel):
    name: str = Field(max_length=200, description="What the token is for, e.g. 'ci'.")
    workspace: Reference | None = Field(
        None, max_length=200, description="Workspace name or id (admin tokens only; default: your own)."
    )
    admin: bool = Field(False, description="An admin token (admin tokens only).")


class WorkspaceView(BaseModel):
    id: str
    name: str
    created_at: datetime


class TokenView(BaseModel):
    id: str
    name: str
    workspace: str
    workspace_id: str
    admin: bool
    created_at: datetime


class NewTokenView(TokenView):
    token: str = Field(description="The token itself: shown this once, stored only as a hash.")


class NewWorkspaceView(WorkspaceView):
    token: str = Field(description="The workspace's first token (not an admin one): shown this once.")
    token_id: str


def _workspace(ws: WorkspaceRow) -> WorkspaceView:
    return WorkspaceView(id=ws.id, name=ws.name, created_at=ws.created_at)


def _token(row: TokenRow, ws: WorkspaceRow) -> TokenView:
    return TokenView(
        id=row.id,
        name=row.name,
        workspace=ws.name,
        workspace_id=ws.id,
        admin=row.admin,
        created_at=row.created_at,
    )


@router.post(
    "/workspaces", response_model=NewWorkspaceView, status_code=201, openapi_extra={"x-orch-admin": True}
)
def create_workspace(body: CreateWorkspace, platform: PlatformDep, caller: CallerDep) -> NewWorkspaceView:
    """Create a workspace (admin tokens only); the answer holds its first token, shown this once."""
    with platform.store.session() as s:
        ws, first = workspaces.new_workspace(s, caller, body.name)
        return NewWorkspaceView(**_workspace(ws).model_dump(), token=first.token, token_id=first.row.id)


@router.get("/workspaces", response_model=list[WorkspaceView])
def list_workspaces(platform: PlatformDep, caller: CallerDep) -> list[WorkspaceView]:
    """Every workspace for an admin token; the token's own workspace otherwise."""
    with platform.store.session() as s:
        return [_workspace(ws) for ws in workspaces.list_workspaces(s, caller)]


@router.post("/tokens", response_model=NewTokenView, status_code=201)
def create_token(body: CreateToken, platform: PlatformDep, caller: CallerDep) -> NewTokenView:
    """Create a token for your workspace (an admin token: for any workspace); shown this once."""
    with platform.store.session() as s:
        new = workspaces.new_token(s, caller, body.workspace, body.name, body.admin)
        return NewTokenView(**_token(new.row, new.workspace).model_dump(), token=new.token)


@router.get("/tokens", response_model=list[TokenView])
def list_tokens(
    platform: PlatformDep,
    caller: CallerDep,
    workspace: str | None = Query(None, max_length=200, description="Only this workspace's (admin)."),
) -> list[TokenView]:
    """Tokens' ids, names and workspaces, never the tokens themselves."""
    with platform.store.session() as s:
        return [_token(t, w) for t, w in workspaces.list_tokens(s, caller, workspace)]


@router.delete("/tokens/{token_id}", response_model=TokenView)
def revoke_token(token_id: str, platform: PlatformDep, caller: CallerDep) -> TokenView:
    """Revoke a token: the next request that sends it is refused."""
    with platform.store.session() as s:
        return _token(*workspaces.revoke_token(s, caller, token_id))
