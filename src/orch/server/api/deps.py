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


def get_workspace_id(
    platform: Annotated[Platform, Depends(get_platform)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    with platform.store.session() as s:
        return workspaces.authenticate(s, credentials.credentials if credentials else None).id


PlatformDep = Annotated[Platform, Depends(get_platform)]
WorkspaceDep = Annotated[str, Depends(get_workspace_id)]
