"""Dependencies shared by routes: the platform and the caller's workspace."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orch.services import workspaces
from orch.services.platform import Platform

_bearer = HTTPBearer(auto_error=False, description="A workspace API token.")


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


# The web UI signs in by storing the token in this cookie (HttpOnly, SameSite=Strict); its pages
# and their scripts then call the same API as the CLI.
TOKEN_COOKIE = "orch_token"  # noqa: S105 - a cookie name, not a secret


def get_workspace_id(
    request: Request,
    platform: Annotated[Platform, Depends(get_platform)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    token = credentials.credentials if credentials else request.cookies.get(TOKEN_COOKIE)
    with platform.store.session() as s:
        return workspaces.authenticate(s, token).id


def get_caller(
    request: Request,
    platform: Annotated[Platform, Depends(get_platform)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> workspaces.Caller:
    """The caller's workspace and whether its token is an admin token (for the admin routes)."""
    token = credentials.credentials if credentials else request.cookies.get(TOKEN_COOKIE)
    with platform.store.session() as s:
        return workspaces.identify(s, token)


PlatformDep = Annotated[Platform, Depends(get_platform)]
WorkspaceDep = Annotated[str, Depends(get_workspace_id)]
CallerDep = Annotated[workspaces.Caller, Depends(get_caller)]
