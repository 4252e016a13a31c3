"""The app factory: routes, error handling, and the workers' lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orch import __version__
from orch.errors import ClientGone, OrchError, StoreBusy, StoreFull, StoreUnavailable
from orch.errors import store_trouble as errors_store_trouble
from orch.server import api_docs, body_limit, head, metrics, paths, proxy, sandbox_relay, ui_host
from orch.server.api import (
    agents,
    environments,
    nodes,
    run_events,
    runs,
    sandboxes,
    secrets,
    services,
    workspaces,
)
from orch.server.api.deps import NUL_IN_URL
from orch.server.api.errors import ERROR_RESPONSES
from orch.server.ui import routes as ui
from orch.server.ui.assets import Assets
from orch.services import environments as envs
from orch.services import secrets as workspace_secrets
from orch.services.platform import Platform
from orch.workers import Workers
from orch.workers.nodes import Watch

log = logging.getLogger(__name__)


def create_app(platform: Platform, workers: bool = True) -> FastAPI:
    """The control plane for `platform`; `workers=False` leaves builds queued (for tests)."""
    # A cluster's server runs no work itself: its nodes do (docs/scale.md).
    background: Workers | Watch = Workers(platform) if platform.runs_work else Watch(platform)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if workers:
            background.start()
        try:
            yield
        finally:
            await proxy.close(_app.state)
            await sandbox_relay.close(_app.state)
            if workers:
                background.stop()

    platform.store.migrate()
    envs.seed_builtins(platform)
    workspace_secrets.prepare(platform)  # the secret key, made on first start
    app = FastAPI(
        title="orch",
        version=__version__,
        description="Run AI agents in isolated sandboxes. Every call needs a workspace token "
        "(`Authorization: Bearer ...`).",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        docs_url=None,  # FastAPI's loads Swagger UI from a CDN: orch serves its own (api_docs.py)
        redoc_url=None,
    )
    app.state.platform = platform
    app.include_router(environments.router)
    app.include_router(ui.router)
    app.mount("/ui/static", Assets(directory=Path(ui.__file__).parent / "static"), name="ui-static")
    app.include_router(agents.router)
    app.include_router(runs.router)
    app.include_router(run_events.router)
    app.include_router(sandboxes.router)
    app.include_router(services.router)
    app.include_router(workspaces.router)
    app.include_router(secrets.router)
    app.include_router(nodes.router)
    api_docs.install(app)
    # Services are served on an origin of their own (server/proxy.py says why): the server
    # serves this app on `services_port`; their old address here sends callers there.
    app.state.services_app = proxy.services_app(platform, state=app.state)
    metrics.install(app, platform)
    # Inside the sandbox relay, which passes uploads on to nodes that bound them in turn.
    app.add_middleware(body_limit.BodyLimit, limit=int(platform.config.request_body_limit))
    if not platform.runs_work:  # a cluster's server: its nodes hold the sandboxes on demand
        app.add_middleware(sandbox_relay.SandboxRelay, platform=platform, state=app.state)
    app.add_middleware(ui_host.ServicesHostName, services_url=platform.services_url)  # no UI there
    app.add_middleware(SecurityHeaders)
    app.add_middleware(head.HeadAsGet)
    app.add_middleware(paths.EncodedSeparators)  # outermost: before any relay or route sees the path

    @app.api_route("/services/{rest:path}", methods=list(proxy.METHODS), include_in_schema=False)
    def services_moved(request: Request) -> RedirectResponse:
        query = request.url.query
        path = (request.scope.get("raw_path") or quote(request.url.path).encode()).decode("latin-1")
        target = platform.services_url + path
        return RedirectResponse(target + (f"?{query}" if query else ""), status_code=308)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        # A person opens the server's address first: that is the web UI.
        return RedirectResponse("/ui", status_code=307)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    install_errors(app)
    return app


def install_errors(app: FastAPI) -> None:
    """Every error as orch's JSON object (`{error, message, fix}`), never a traceback."""

    @app.exception_handler(OrchError)
    async def orch_error(request: Request, exc: OrchError) -> Response:
        if ui.is_page(request.url.path):  # refused before the page's code (a %00, a form too large)
            return ui.problem_page(request, exc.http_status, exc.message)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        # The caller went away while its body came (an upload cut short): an everyday event,
        # not a crash, so not the traceback the last handler's would log. Nobody reads this.
        return await orch_error(request, ClientGone("The caller went away before its request's body ended."))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        message = f"{where} {_plainly(first)}."
        if first.get("type") == "json_invalid":  # loc is ("body", character position)
            error = str(first.get("ctx", {}).get("error", "JSON decode error"))
            message = f"the body is not valid JSON ({error} at character {where})."
        if ui.is_page(request.url.path):
            return ui.problem_page(request, 422, f"The address is not valid: {message}")
        return JSONResponse(
            {
                "error": "invalid_input",
                "message": f"The request is not valid: {message}",
                "fix": "See the API reference at /docs for the expected fields.",
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, OrchError):  # raised while FastAPI read the body (a bound)
            return await orch_error(request, exc.__cause__)
        if ui.is_page(request.url.path):  # a person's browser: a page to go on from
            return ui.problem_page(request, *_page_error_text(request, exc))
        message, fix = _http_error_text(request, exc)
        return JSONResponse(
            {"error": "http_error", "message": message, "fix": fix},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    def store_trouble(
        request: Request, exc: BaseException
    ) -> StoreFull | StoreUnavailable | StoreBusy | None:
        """What `exc` means if it is the store's trouble, not a bug: its disk full, the store not
        answering, or busy past a request's wait; else None."""
        platform = getattr(request.app.state, "platform", None)
        return platform.store.trouble(exc) if isinstance(platform, Platform) else errors_store_trouble(exc)

    def store_named(request: Request) -> str:
        """The store's URL (without its password) for the log, which the answer leaves out."""
        platform = getattr(request.app.state, "platform", None)
        return platform.store.shown if isinstance(platform, Platform) else ""

    async def store_error(request: Request, exc: Exception) -> Response:
        """A store whose disk is full fails every write, one that does not answer every request,
        and a busy one the request that waited past its wait: the machine's trouble, not a bug,
        said with its fix (503), its log one line, not a traceback per request. Any other store
        error goes on to `crash`."""
        if (trouble := store_trouble(request, exc)) is None:
            raise exc
        log.warning("%s %s: %s (%s)", request.method, request.url.path, trouble.message, store_named(request))
        return await orch_error(request, trouble)

    app.add_exception_handler(DBAPIError, store_error)
    app.add_exception_handler(OSError, store_error)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> Response:
        if (trouble := store_trouble(request, exc)) is not None:  # wrapped in another error (its cause)
            return await orch_error(request, trouble)
        return JSONResponse(
            {
                "error": "internal",
                "message": f"The server failed: {type(exc).__name__}.",
                "fix": "See the server's log; this is a bug worth reporting.",
            },
            status_code=500,
        )


class SecurityHeaders:
    """Headers that keep the server's answers from being misused by other sites' pages: none may
    frame them (a service's page, on the same site, could else frame a signed-in Settings page
    and have its visitor click Delete: the clicks would count as the UI's own), none is sniffed
    as another type, and no address of ours goes to another site as a referrer. The UI's pages
    and the API's reference (/docs) also load nothing but the server's own files (they have no
    inline script or style), and the UI's pages are not kept by the browser (Back after signing
    out must not show a workspace's page).
    Services are another app on their own port (main.by_port): their answers keep their own
    headers."""

    EVERYWHERE = (
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )
    API = (*EVERYWHERE, (b"content-security-policy", b"frame-ancestors 'none'"))
    # The API's reference page loads the server's own files too (api_docs.py says what it needs).
    DOCS = (*EVERYWHERE, api_docs.POLICY)
    PAGES = (
        *EVERYWHERE,
        (
            b"content-security-policy",
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
            b"connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
            b"frame-ancestors 'none'",
        ),
        (b"cache-control", b"no-store"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = self.PAGES if ui.is_page(path) else self.DOCS if path == api_docs.PAGE else self.API

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                have = {name.lower() for name, _ in headers}
                message["headers"] = headers + [h for h in extra if h[0] not in have]
            await send(message)

        await self.app(scope, receive, sending)


# What pydantic's commonest errors say, in the API's words ("name is longer than 200 characters",
# not "String should have at most 200 characters"); any other keeps pydantic's message.
_SAID: dict[str, str] = {
    "missing": "is missing",
    "extra_forbidden": "is not a field of this request",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_too_long": "is longer than {max_length} characters",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
}


def _plainly(error: Mapping[str, Any]) -> str:
    """What was wrong with one field, after its name."""
    kind, ctx = error.get("type", ""), error.get("ctx") or {}
    text = isinstance(error.get("input"), str)
    if kind in ("too_long", "too_short") and text:
        kind = "string_" + kind
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "is empty" if n == 1 else f"is shorter than {n} characters"
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} items"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    if kind in _SAID:
        try:
            return _SAID[kind].format(**ctx)
        except (KeyError, IndexError):
            pass
    return f"is not valid: {str(error.get('msg', 'invalid value')).rstrip('.')}"


def _page_error_text(request: Request, exc: StarletteHTTPException) -> tuple[int, str]:
    """The status and sentence of the UI's error page for what Starlette refuses: never the
    path itself, which a link chooses ("/ui/Your token was revoked. Sign in at ..." would have the
    page say it; docs/ui.md), and a NUL in it is refused as the pages refuse it (400)."""
    if "\x00" in request.url.path:
        return 400, NUL_IN_URL[0]
    if exc.status_code == 404:
        return 404, ui.NO_PAGE
    if exc.status_code == 405:
        return 405, f"This page does not take {request.scope.get(head.ASKED, request.method)}."
    return exc.status_code, _http_error_text(request, exc)[0]


def _http_error_text(request: Request, exc: StarletteHTTPException) -> tuple[str, str]:
    """A sentence and a fix for the errors Starlette and FastAPI raise themselves."""
    path = request.url.path
    if exc.status_code == 404:
        return f"Nothing is at {path}.", "See /docs for the API's routes."
    if exc.status_code == 405:
        method = request.scope.get(head.ASKED, request.method)
        return f"{path} does not take {method}.", "See /docs for the methods each route takes."
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return (
            "The request body could not be read: its JSON nests arrays and objects too deeply.",
            "Send a JSON object with the fields listed at /docs; no field nests more than a few levels.",
        )
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return (
            "The request body could not be read: it is not JSON in UTF-8.",
            "Send a JSON object with the fields listed at /docs.",
        )
    if exc.status_code == 400 and str(exc.detail).startswith("Field exceeded maximum size"):
        return (  # Starlette's form parser (a field past 1 MiB): a web UI form, a pasted token
            "A field of the form is larger than 1 MiB, more than any field of orch's forms takes "
            "(a secret's value is at most 64 KiB).",
            "Go back and enter a shorter value.",
        )
    detail = str(exc.detail).strip() or "The request failed"
    return (detail if detail.endswith((".", "?", "!")) else f"{detail}.", "See /docs.")
