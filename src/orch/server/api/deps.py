"""Dependencies shared by routes: the platform and the caller's workspace."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from orch.errors import Forbidden, InvalidInput, Unauthorized
from orch.models import check_name
from orch.server.json_body import JsonRequest
from orch.server.tokens import TOKEN_COOKIE as TOKEN_COOKIE  # the UI reads it here too
from orch.server.tokens import BearerScheme, sign_in_cookies
from orch.services import workspaces
from orch.services.platform import Platform

# The header read as the services' proxy reads it (server/tokens.py: one reading of a token).
_bearer = BearerScheme(description="A workspace API token.")


# What does no I/O is `async`: FastAPI runs a plain `def` dependency in its thread pool, a hop
# there and back for each, at every request.


async def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def request_token(request: Request, credentials: HTTPAuthorizationCredentials | None = None) -> str | None:
    """The caller's token: Authorization: Bearer, else the web UI's cookie, which counts for a
    request with effects only when it comes from the web UI's own pages. A browser sends the
    cookie with a form another site's page posts here (the same site, another port, included):
    such a request must not act as the signed-in visitor."""
    if credentials:
        return credentials.credentials
    token = request.cookies.get(TOKEN_COOKIE)
    if token is not None and len(sign_in_cookies(request)) > 1:
        raise Unauthorized(
            "This request carries two web UI sign-in cookies, one of them set by another page of "
            "this host, so neither counts.",
            "Sign in again on orch's own page (signing in or out removes both), or send an "
            "'Authorization: Bearer' token.",
        )
    if token is not None and request.method not in _SAFE_METHODS and not from_own_page(request):
        raise Forbidden(
            "This request carries the web UI's sign-in cookie but comes from a page of another "
            "origin, so it is refused.",
            "Send the request from orch's own pages, or with an 'Authorization: Bearer' token.",
        )
    return token


def from_own_page(request: Request) -> bool:
    """Whether the browser says the request comes from this origin (Sec-Fetch-Site, or Origin
    where a browser sends no Sec-Fetch-Site); a request from no page at all (a tool) is too."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


# The scope's keys for what ApiRoute found of the caller before the body was read: the
# dependencies below take it from there rather than look the token up again.
_WORKSPACE = "orch.workspace_id"
_CALLER = "orch.caller"


def get_workspace_id(
    request: Request,
    platform: Annotated[Platform, Depends(get_platform)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    known: str | None = request.scope.get(_WORKSPACE)
    return known or workspaces.workspace_of(platform, request_token(request, credentials))


def get_caller(
    request: Request,
    platform: Annotated[Platform, Depends(get_platform)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> workspaces.Caller:
    """The caller's workspace and whether its token is an admin token (for the admin routes)."""
    known: workspaces.Caller | None = request.scope.get(_CALLER)
    return known or workspaces.caller(platform, request_token(request, credentials))


# An admin-only route's `openapi_extra`: {ADMIN: "create workspaces"}, what only an admin token
# may do there, as require_admin says it.
ADMIN = "x-orch-admin"


class ApiRoute(APIRoute):
    """A route of the API (every /v1 router's `route_class`). FastAPI reads and parses a JSON
    body before it solves a single dependency, so the token would be checked only after the
    whole body was in memory: a route with a body authenticates its caller first, and an
    admin-only one refuses a plain token, before a byte of the body is read (the dependencies
    then take the caller found here). Uploads read their body in the endpoint, after the
    dependencies: they need nothing more. An app that authenticates its callers otherwise
    overrides `api_workspace_id` with a function of the request alone (a cluster node's API
    checks the relay token, server/node_api.py): that is called here instead.
    docs/architecture.md#request-bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        admin: str | None = (self.openapi_extra or {}).get(ADMIN)

        async def authenticated(request: Request) -> Response:
            request = JsonRequest(request.scope, request.receive)  # NaN is not JSON (server/json_body.py)
            platform: Platform = request.app.state.platform
            relayed = request.app.dependency_overrides.get(api_workspace_id)
            if relayed is not None:  # an app that authenticates otherwise (a node: server/node_api.py)
                request.scope[_WORKSPACE] = await run_in_threadpool(relayed, request)
                return await handler(request)
            token = request_token(request, await _bearer(request))
            if admin:
                caller = await run_in_threadpool(workspaces.caller, platform, token)
                workspaces.require_admin(caller, admin)
                request.scope[_CALLER] = caller
                request.scope[_WORKSPACE] = caller.workspace_id
            else:
                request.scope[_WORKSPACE] = await run_in_threadpool(workspaces.workspace_of, platform, token)
            return await handler(request)

        return authenticated


async def asked_again(request: Request) -> None:
    """After a long poll's wait (logs, events): its caller's token is asked again, so one revoked
    during the wait, or its workspace deleted, gets 401 rather than what was written after the
    revoke (found by a tester: a poll begun just before it answered up to 30 s of later output).
    An app that authenticates its callers otherwise (a node's relay, `api_workspace_id`
    overridden) is left as it is: its server asked the caller."""
    if request.app.dependency_overrides.get(api_workspace_id) is not None:
        return
    token = request_token(request, await _bearer(request))
    await run_in_threadpool(workspaces.workspace_of, request.app.state.platform, token)


def api_router(tag: str) -> APIRouter:
    """The router of one part of the API, under /v1."""
    return APIRouter(prefix="/v1", tags=[tag], route_class=ApiRoute)


NUL_IN_URL = (
    "The URL holds a NUL character (%00), which no name or id contains.",
    "Remove the %00 from the URL.",
)


def refuse_nul(request: Request) -> None:
    """Refuse a NUL character (%00) in the path or the query: no name or id holds one, and
    PostgreSQL refuses it even in a lookup."""
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in request.query_params.multi_items()):
        raise InvalidInput(*NUL_IN_URL)


async def api_workspace_id(request: Request, ws: Annotated[str, Depends(get_workspace_id)]) -> str:
    refuse_nul(request)  # after authenticating: a call without a valid token gets 401 whatever it holds
    return ws


async def _api_caller(
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
# A new name in a request body: bounded here, then checked (1-63 characters, models.check_name)
# with a sentence that says the rule; a bound at 63 would answer in pydantic's words instead.
NAME_FIELD = 1000


def name_rule(what: str) -> BeforeValidator:
    """For a new name's field (`what`: "Workspace name", as models.check_name says it): a name
    past NAME_FIELD characters is refused with the rule's sentence (HTTP 400), as every other bad
    name is, not with the bound's ("name is longer than 1000 characters")."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and len(value) > NAME_FIELD:
            check_name(value, what)
        return value

    return BeforeValidator(check)


class Body(BaseModel):
    """A request body: a field it does not have is refused (HTTP 422, "memroy is not a field of
    this request"), never ignored, so a misspelt limit can't silently fall back to its default.
    Its fields take their JSON type only (strict): a number field refuses `true` and `"60"`
    ("timeout must be a whole number"; `true` was taken as 1, a one-second timeout), a boolean
    refuses 1 and "yes", as a text field refuses 512. Forms that take another JSON type say so
    in their own type (a size is text: "512Mi")."""

    model_config = ConfigDict(extra="forbid", strict=True)


PlatformDep = Annotated[Platform, Depends(get_platform)]
WorkspaceDep = Annotated[str, Depends(api_workspace_id)]
CallerDep = Annotated[workspaces.Caller, Depends(_api_caller)]
