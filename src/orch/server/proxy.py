"""The reverse proxy in front of services: /services/WORKSPACE/NAME/PATH on the services' own
origin (`services_app`: their own port, `services_port`) goes to one of the service's containers
(over Podman's bridge, by its address), HTTP and WebSocket alike. Services have no port on any
host interface; this is their one way in.

Services have an origin apart from the API and web UI's, so that a page a service serves can't
call the API as a visitor signed in to the UI; on that origin no cookie counts as a token.
A private service (the default) needs a token of its workspace (Authorization: Bearer), as every
API call does; a public one answers anyone. Either way nothing of the platform's passes: orch's
token (the Authorization header, the web UI's cookie) never reaches the service, and the service
can't set that cookie.

It is ASGI middleware in front of an app that answers only "not here": a proxied request skips
routing and dependencies, and finds its route without the store (services/routing.py keeps them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from orch import metrics
from orch.errors import ClientGone, NotFound, OrchError, ServiceUnavailable, Unauthorized
from orch.server import proxy_client, relay, tokens
from orch.server.http_protocol import CutShort
from orch.server.proxy_client import Answer, Client, ClientLeft, ConnectFailed, NothingCame, UpstreamError
from orch.server.proxy_headers import answer_headers, request_headers
from orch.server.proxy_websocket import forward_websocket
from orch.services import deployed, routing
from orch.services.platform import Platform
from orch.services.routing import Backend, InFlight, Route

log = logging.getLogger(__name__)

PREFIX = "/services/"
# What the proxy answers, as routes would say it (it is not one: tests walk every route with these).
PATHS = ("/services/{workspace}/{name}", "/services/{workspace}/{name}/{path:path}")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
EVENT_STREAM = b"text/event-stream"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})  # requests without effects: safe to send twice


def services_app(platform: Platform, state: Any = None) -> ServiceProxy:
    """The app on the services' origin: /services/... to the services, nothing else."""
    return ServiceProxy(_elsewhere, platform, state)


async def _elsewhere(scope: Scope, receive: Receive, send: Send) -> None:
    """What the services' origin answers for any other path: the API and UI are not here."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    error = NotFound(
        f"Nothing is at {scope['path']} here: this address serves orch's services only, at "
        "/services/WORKSPACE/NAME/.",
        "The API and the web UI are at the server's own address (its port, not this one).",
    )
    await JSONResponse(error.to_dict(), status_code=error.http_status)(scope, receive, send)


class ServiceProxy:
    """ASGI middleware: /services/... to the services, everything else to `app`. A node's proxy
    (`for_node`, server/node_proxy.py) takes only requests relayed by the cluster's servers, and
    sends them to its own containers."""

    def __init__(self, app: ASGIApp, platform: Platform, state: Any = None, for_node: bool = False) -> None:
        self.app = app
        self.platform = platform
        self.routing = routing.of(platform)
        self.for_node = for_node
        self._client: Client | None = None
        self._relay_token: str | None = None
        if state is not None:
            state.service_proxy = self  # so that the app's shutdown closes its connections (close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _target(scope) if scope["type"] in ("http", "websocket") else None
        if target is None:
            await self.app(scope, receive, send)
            return
        workspace, name, path = target
        if scope["type"] == "websocket":
            await forward_websocket(self, scope, receive, send, workspace, name, path)
            return
        started = time.perf_counter()
        status = 0
        try:
            route, backends = await self.resolve(scope, workspace, name)
            status = await self._forward(scope, receive, send, route, backends, path)
        except OrchError as e:
            if status == 0:  # nothing sent yet: orch's own answer
                status = e.http_status
                await JSONResponse(e.to_dict(), status_code=e.http_status)(scope, receive, send)
        except DBAPIError as e:  # the store, asked for a route or a private service's token
            if status != 0 or (down := self.store_trouble(scope, e)) is None:
                raise  # a bug: its traceback
            status = down.http_status
            headers = {"Retry-After": str(down.retry_after)} if down.retry_after else None
            await JSONResponse(down.to_dict(), status_code=status, headers=headers)(scope, receive, send)
        except CutShort:  # the service broke off its answer: so did the proxy
            status = ServiceUnavailable.http_status
            raise
        except asyncio.CancelledError:  # the client went away first: nginx's 499
            status = 499
            raise
        finally:
            if status != 401:  # refused for its token: not a request to a service
                metrics.of(self.platform).proxy_request(status or 500, time.perf_counter() - started)

    def store_trouble(self, scope: Scope, e: DBAPIError) -> OrchError | None:
        """The 503 that the store's error `e` means if it is its trouble, not a bug (said in one
        line of the log, the store named there only); else None."""
        if (down := self.platform.store.trouble(e)) is not None:
            log.warning(
                "%s %s: %s (%s)",
                scope.get("method", "GET"),
                scope["path"],
                down.message,
                self.platform.store.shown,
            )
        return down

    async def resolve(self, scope: Scope, workspace: str, name: str) -> tuple[Route, list[Backend]]:
        """The service's route and the backends to try, after the token rule: a public service
        answers anyone; a private one a token of its workspace (401 without one, 404 for
        another workspace's, as for a service that does not exist)."""
        if self.for_node and not relay.accepted(_header(scope, relay.TOKEN_HEADER), self.relay_token):
            raise Unauthorized(
                "This address serves a cluster node's services to the cluster's servers only.",
                "Reach services at the services URL of the cluster's server.",
            )
        found, route = self.routing.cached(workspace, name)
        if not found:
            route = await run_in_threadpool(self.routing.lookup, workspace, name)
        if self.for_node:  # the server checked the caller's token
            if route is None:
                raise NotFound(f"No service {workspace}/{name} here.", "")
        elif route is None or not route.public:
            ws_id = await self.token_workspace(scope)
            if route is None or route.workspace_id != ws_id:
                raise NotFound(
                    f"No service {workspace}/{name} for this token.",
                    "See the list of services for their URLs.",
                )
        backends = self.routing.pick(route)
        wanted = _header(scope, relay.REPLICA_HEADER) if self.for_node else None
        if wanted is not None:  # the replica the server picked first, if it is still here
            backends.sort(key=lambda b: b.container.encode() != wanted)
        if not backends and route.backends and (why := self.routing.going(route)) is not None:
            raise ServiceUnavailable(  # the platform's doing (a restart, a redeploy), not the service's
                f"The service {name} is not answering for a moment: {why}.",
                "Try again in a few seconds; see the service's status.",
            )
        if not backends and route.backends:  # each refused a connection a moment ago
            raise ServiceUnavailable(
                f"The service {name} is not answering: its process stopped, and it is being restarted.",
                deployed.SEE_STATUS_AND_LOGS,
            )
        if not backends:
            raise ServiceUnavailable(
                f"The service {name} is {route.state}, not running.", deployed.SEE_STATUS_AND_LOGS
            )
        return route, backends

    async def token_workspace(self, scope: Scope) -> str:
        """The workspace of the request's token (Unauthorized without one, or for one not valid),
        asked of the store at most once a TOKEN_SECONDS per token (services/routing.py): what
        opens a private service, and keeps its WebSockets open (server/proxy_websocket.py)."""
        token = _token(scope)
        known = self.routing.known(token)
        return known if known is not None else await run_in_threadpool(self.routing.workspace_of, token)

    @property
    def relay_token(self) -> str:
        """The cluster's relay token (server/relay.py), read from the secret key at first use."""
        if self._relay_token is None:
            self._relay_token = relay.token(self.platform.config)
        return self._relay_token

    def upstream(self, route: Route, backend: Backend, target: str) -> relay.Upstream:
        """Where a request for `backend` goes: the container, or its node's proxy."""
        return relay.upstream(route, backend, target, self.relay_token if backend.relay else None)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client()
            loop = asyncio.get_running_loop()

            # Connections kept to containers that go are closed (from the thread that drains them).
            def forget(gone: list[str]) -> None:
                loop.call_soon_threadsafe(self._client_forget, gone)

            self.routing.on_gone(forget)
        return self._client

    def _client_forget(self, containers: list[str]) -> None:
        if self._client is not None:
            self._client.forget(containers)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, route: Route, backends: list[Backend], path: str
    ) -> int:
        """Send the request to the first backend that takes it, stream its answer back; return
        its status."""
        headers = [h for h in request_headers(scope, route, self.for_node) if h[0] != b"content-length"]
        length, has_body = _body_length(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        target = path + (f"?{query}" if query else "")
        attempt = 0
        for backend in [*backends, backends[-1]]:
            end = self.routing.begin(backend.container)  # in flight: a drain lets it finish
            to = self.upstream(route, backend, target)
            try:
                answer = await self.client.request(
                    backend.container,
                    to.host,
                    to.port,
                    scope["method"],
                    to.target,
                    [*headers, *to.headers],
                    request_body(receive) if has_body else None,
                    length,
                    lambda: client_gone(receive),
                )
            except ClientLeft:
                end()
                raise ClientGone("The caller went away before the service answered.", "") from None
            except UpstreamError as e:
                end()
                if end.cut is not None:  # a drain's time ran out: the platform stopped its replica
                    raise ServiceUnavailable(
                        f"The service {route.name} did not answer: its replica was stopped with this "
                        f"request still in flight ({end.cut}).",
                        _cut_fix(route.name, end),
                    ) from None
                if isinstance(e, ConnectFailed) and e.refused:
                    self.routing.refused(backend.container)
                # Nothing was sent: another replica can take it. For a request without effects
                # on a kept-alive connection the service had closed (nothing came back), the
                # last replica too, on a new connection; not after a failed connect, which would
                # only fail again. A body read already cannot be sent again.
                again = (isinstance(e, ConnectFailed) and attempt < len(backends) - 1) or (
                    isinstance(e, NothingCame) and scope["method"] in _SAFE
                )
                if again and not has_body and attempt < len(backends):
                    attempt += 1
                    continue
                raise ServiceUnavailable(
                    f"The service {route.name} did not answer ({e}).", deployed.SEE_STATUS_AND_LOGS
                ) from None
            if answer.stalled:  # its answer is the caller's; the caller's connection closes after it
                log.warning(
                    "%s/%s answered before it read a request's body, then read none of it for %g s: "
                    "the rest was not sent, and its caller's connection is closed after the answer.",
                    route.workspace,
                    route.name,
                    proxy_client.SEND_TIMEOUT,
                )
            try:
                await self._answer(scope, receive, send, answer, backend, end)
            except ServiceUnavailable as e:  # after the answer began: the client's connection is cut
                # One line in the log, as nginx's "upstream prematurely closed connection": found by
                # a tester, each broken answer logged a traceback, which any caller could repeat.
                why = f" (its replica was stopped: {end.cut})" if end.cut is not None else ""
                raise CutShort(
                    f"{route.workspace}/{route.name}: {e.message}{why} Its caller's connection was cut."
                ) from None
            finally:
                end()
                answer.release()
            return answer.status
        raise AssertionError("unreachable: the last backend returns or raises")

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        answer: Answer,
        backend: Backend,
        end: InFlight,
    ) -> None:
        headers = answer_headers(answer.headers)
        if answer.early:  # the rest of the caller's body is unread: not the next request's bytes
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        if answer.whole():  # nothing to wait for, so no caller leaving to watch (a task less)
            try:
                async for chunk in answer.body():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as e:  # the client sees the answer end short of its length
                raise ServiceUnavailable(f"The service's answer broke off: {e}.", "") from None
            await send({"type": "http.response.body", "body": b""})
            return
        # Any other body is watched for the caller leaving, however its end is told. Found by a
        # tester: a body of a known length was not (it ends, but a stalled download may not for
        # READ_TIMEOUT), and its caller's going left the connection to the service open for
        # that long: 50 callers who gave up on stalled answers left 52 connections open.
        # And for a drain's time running out with it still coming: its replica stops under it.
        if not (answer.header(b"content-type") or b"").startswith(EVENT_STREAM):
            await pump(answer.body(), send, receive, None, _cut_event(end))
            return
        # An event stream never ends by itself: not in flight (a drain would wait for it in
        # vain) but long-lived, which a drain closes.
        end()
        with self.routing.long_lived(backend.container, "stream") as conn:
            await pump(answer.body(), send, receive, conn.closing)


def _cut_event(end: InFlight) -> asyncio.Event:
    """An event set when a drain cuts the request `end` (at once if one did)."""
    loop = asyncio.get_running_loop()
    cut = asyncio.Event()

    def tell() -> None:  # from the drain's thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody left to tell
            loop.call_soon_threadsafe(cut.set)

    end.when_cut(tell)
    return cut


def _cut_fix(name: str, end: InFlight) -> str:
    """What the caller of a request cut by a drain can do: try again unless the service is gone."""
    if end.cut == routing.STOPPED:
        return f"The service stays stopped until it is restarted (orch service restart {name})."
    if end.cut == routing.DELETED:
        return "The service was deleted: it answers again once it is deployed again."
    return "Try again in a few seconds; see the service's status."


def _body_length(scope: Scope) -> tuple[int | None, bool]:
    """(the request body's Content-Length, None if chunked; whether there is a body)."""
    chunked = False
    for key, value in scope["headers"]:
        if key == b"content-length" and value.strip().isdigit():
            return int(value), True
        if key == b"transfer-encoding":
            chunked = True
    return None, chunked


def _target(scope: Scope) -> tuple[str, str, str] | None:
    """(workspace, service, the path to forward) of a /services/... request, None for any other.
    The path goes on as the client encoded it (a '%2F' or '%00' in it is the service's business)."""
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        return None
    raw: bytes = scope.get("raw_path") or quote(path).encode()
    parts = raw.decode("latin-1").split("/", 4)  # "", "services", WORKSPACE, NAME, REST
    if len(parts) < 4 or not parts[2] or not parts[3]:
        return None
    rest = parts[4] if len(parts) == 5 else ""
    return unquote(parts[2]), unquote(parts[3]), "/" + rest


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


def _token(scope: Scope) -> str | None:
    """The request's token: Authorization: Bearer only, read as the API reads it (server/tokens.py).
    A browser sends the web UI's cookie here too (cookies do not tell ports apart), and a
    service's page could then open private services as its visitor: so the cookie never counts here."""
    authorization = _header(scope, b"authorization")
    return tokens.bearer(authorization.decode("latin-1") if authorization is not None else None)


async def request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # half a body: the service must not take it whole
            raise ClientLeft
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def client_gone(receive: Receive) -> None:
    """Return when the client has gone (what is left of its request is read and dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def pump(
    chunks: AsyncIterator[bytes],
    send: Send,
    receive: Receive,
    closing: asyncio.Event | None,
    cut: asyncio.Event | None = None,
) -> None:
    """Send the answer's body as it comes, until its end, the client leaving, `closing`
    (a drain or the server's stop: the answer then ends cleanly, as if the service ended it),
    or `cut` (its replica is stopped under it: ServiceUnavailable, the client sees it cut)."""

    async def copy() -> None:
        async for chunk in chunks:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

    waiters: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(copy()),
        asyncio.ensure_future(client_gone(receive)),
    ]
    for event in (closing, cut):
        if event is not None:
            waiters.append(asyncio.ensure_future(event.wait()))
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # its error is read below
                await w
    if waiters[1] in done:
        return  # nobody to answer
    if waiters[0] in done and (error := waiters[0].exception()) is not None:
        # The service broke off its answer: so does the proxy (the client sees it incomplete).
        raise ServiceUnavailable(f"The service's answer broke off: {error}.", "")
    if waiters[0] not in done and cut is not None and cut.is_set():
        raise ServiceUnavailable("The service's answer was still coming when the drain's time ran out.", "")
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def close(app_state: object) -> None:
    """Close the proxy's connections to the services (at the app's shutdown)."""
    found = getattr(app_state, "service_proxy", None)
    if isinstance(found, ServiceProxy):
        await found.close()
