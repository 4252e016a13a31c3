"""Dependencies shared by routes: the platform and the caller's workspace."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from orch.errors import InvalidInput
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
    return workspaces.caller(platform, token).workspace_id


def get_caller(
    request: Request,
    platform: Annotated[Platform, Depends(get_platform)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> workspaces.Caller:
    """The caller's workspace and whether its token is an admin token (for the admin routes)."""
    token = credentials.credentials if credentials else request.cookies.get(TOKEN_COOKIE)
    return workspaces.caller(platform, token)


def refuse_nul(request: Request) -> None:
    """Refuse a NUL character (%00) in the path or the query: no name or id holds one, and
    PostgreSQL refuses it even in a lookup."""
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise InvalidInput(
            "The URL holds a NUL character (%00), which no name or id contains.",
            "Remove the %00 from the URL.",
        )


def _api_workspace_id(request: Request, ws: Annotated[str, Depends(get_workspace_id)]) -> str:
    refuse_nul(request)  # after authenticating: a call without a valid token gets 401 whatever it holds
    return ws


def _api_caller(
    request: Request, caller: Annotated[workspaces.Caller, Depends(get_caller)]
) -> workspaces.Caller:
    refuse_nul(request)
    return caller


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul", "it holds a NUL character, which no name or id contains")
    return value


# A name or id in a request body. No name or id holds a NUL, and PostgreSQL refuses one even in a
# lookup (refuse_nul does the same for paths and queries).
Reference = Annotated[str, AfterValidator(_no_nul)]

PlatformDep = Annotated[Platform, Depends(get_platform)]
WorkspaceDep = Annotated[str, Depends(_api_workspace_id)]
CallerDep = Annotated[workspaces.Caller, Depends(_api_caller)]
# For the services' proxy: the path and query it forwards are the service's business.
ProxyWorkspaceDep = Annotated[str, Depends(get_workspace_id)]
