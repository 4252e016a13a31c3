"""Sandboxes on demand on a cluster (docs/scale.md#sandboxes-on-demand-on-a-cluster): a cluster's
server runs no sandbox itself. It relays a create to the node with the most room, and a command
or a file to the node that holds the sandbox (its row's `owner`), through that node's proxy
(server/node_proxy.py) with the relay token and the workspace it checked (server/relay.py); the
node answers with the same routes, on its own machine, and its answer (an output stream too)
comes back as it goes. Listing, showing and removing need no relay: they are the sandbox's row,
and the holder's reaper tears a removed sandbox down within a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import httpx
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orch.errors import OrchError, ServiceUnavailable
from orch.server import relay, tokens
from orch.server.api.deps import request_token
from orch.server.http_protocol import CutShort
from orch.server.proxy import client_gone, pump, request_body
from orch.server.proxy_client import ClientLeft
from orch.services import nodes, sandboxes, workspaces
from orch.services.platform import Platform
from orch.store.schema import SandboxRow

_CREATE = "/v1/sandboxes"
_HELD = re.compile(r"^/v1/sandboxes/([^/]+)/(exec|files)$")
# Not passed on: hop-by-hop headers, the caller's credentials, and the relay's own (set here).
_NOT_PASSED = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"proxy-authorization",
        b"authorization",
        b"cookie",
        relay.TOKEN_HEADER,
        relay.WORKSPACE_HEADER,
    }
)
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer"})
CONNECT_TIMEOUT = 10.0
MAX_CREATE_BODY = 64 * 1024  # bytes of a create's body read to choose its node


class SandboxRelay:
    """ASGI middleware of a cluster's server: the sandbox calls a node must answer go there."""

    def __init__(self, app: ASGIApp, platform: Platform, state: object = None) -> None:
        self.app, self.platform = app, platform
        self._client: httpx.AsyncClient | None = None
        self._token: bytes | None = None  # the relay token, read from the secret key at first use
        if state is not None:
            state.sandbox_relay = self  # type: ignore[attr-defined]  # closed at the app's shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        which = _which(scope) if scope["type"] == "http" else None
        if which is None:
            await self.app(scope, receive, send)
            return
        memory = 0
        if which == _CREATE:  # the node is chosen by the memory asked for: read the (small) body first
            receive, memory = await _create_body(receive)
        try:
            found = await run_in_threadpool(self._target, scope, which, memory)
        except OrchError as e:
            await JSONResponse(e.to_dict(), status_code=e.http_status)(scope, receive, send)
            return
        if found is None:  # the server's own routes answer (401, 404, a sandbox that ended...)
            await self.app(scope, receive, send)
            return
        await self._relay(scope, receive, send, *found)

    def _target(self, scope: Scope, which: str, memory: int) -> tuple[str, str, str] | None:
        """(workspace id, node id, node proxy) the call goes to; None: answered here."""
        request = Request(scope)
        given = tokens.bearer(request.headers.get("authorization"))  # as the routes read it
        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=given) if given else None
        try:
            token = request_token(request, bearer)
            ws_id = workspaces.workspace_of(self.platform, token)
        except OrchError:
            return None  # the route answers it, as for any call
        if which == _CREATE:
            node = nodes.for_sandbox(self.platform, memory)
            if node is None:
                raise ServiceUnavailable(
                    "No node of the cluster is up to hold a sandbox.",
                    "Start one with `orch node start --cluster HOST:PORT`; `orch node list` shows them.",
                )
            return ws_id, *node
        with self.platform.store.session() as s:
            row = s.get(SandboxRow, which)
            owner = row.owner if row is not None and row.workspace_id == ws_id else None
        node = nodes.proxy_of(self.platform, owner) if owner else None
        return (ws_id, *node) if node is not None else None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT)  # a command may run long
            self._client = httpx.AsyncClient(timeout=timeout, trust_env=False)
        return self._client

    async def _relay(
        self, scope: Scope, receive: Receive, send: Send, ws_id: str, node: str, at: str
    ) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _NOT_PASSED]
        if self._token is None:
            self._token = relay.token(self.platform.config).encode()
        headers += [(relay.TOKEN_HEADER, self._token)]
        headers += [(relay.WORKSPACE_HEADER, ws_id.encode())]
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"http://{at}{raw_path}" + (f"?{query}" if query else "")
        has_body = scope["method"] in ("POST", "PUT", "PATCH")
        sent = asyncio.Event()  # the client's body is read: what `receive` says next is its leaving

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request_body(receive):
                yield chunk
            sent.set()

        if not has_body:
            sent.set()
        request = self.client.build_request(
            scope["method"], url, headers=headers, content=body() if has_body else None
        )
        try:
            answer = await _unless_gone(self.client.send(request, stream=True), sent, receive)
            if answer is None:  # the client left first (a collected command's wait): so does this
                return
        except ClientLeft:  # during its body: the node gets no half of it as a whole one
            return
        except httpx.HTTPError as e:
            error = ServiceUnavailable(
                f"The node {node} that holds the sandbox did not answer ({type(e).__name__}).",
                "See `orch node list`; a sandbox lives as long as its node.",
            )
            await JSONResponse(error.to_dict(), status_code=error.http_status)(scope, receive, send)
            return
        try:
            out = [(k.lower(), v) for k, v in answer.headers.raw if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
            try:
                await pump(answer.aiter_raw(), send, receive, None)
            except OrchError as e:  # the node broke off its answer: so does this one (seen cut)
                raise CutShort(
                    f"The node {node}'s answer broke off ({e.message}) Its caller's connection was cut."
                ) from None
        finally:
            await answer.aclose()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def _create_body(receive: Receive) -> tuple[Receive, int]:
    """Read a create's body (up to MAX_CREATE_BODY; a longer one is no create this reads) and the
    memory it asks for (the default when it says none, or says it wrongly: the node's route
    answers that); and a `receive` that gives the body again, then what the client sends next."""
    chunks, size, more = [], 0, True
    while more and size <= MAX_CREATE_BODY:
        message = await receive()
        if message["type"] == "http.disconnect":
            more = False
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = bool(message.get("more_body", False))
    body = b"".join(chunks)
    try:
        asked = json.loads(body).get("memory")
        memory = sandboxes.limits(asked, None).memory_bytes
    except (ValueError, AttributeError, OrchError):
        memory = sandboxes.limits(None, None).memory_bytes
    given = False

    async def again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": more}

    return again, memory


async def _unless_gone(
    sending: Coroutine[Any, Any, httpx.Response], sent: asyncio.Event, receive: Receive
) -> httpx.Response | None:
    """The node's answer, or None if the client leaves before it comes: the relayed request is
    then cancelled, its connection closed, and the node stops the command it ran for it."""

    async def gone() -> None:
        await sent.wait()
        await client_gone(receive)

    answer, leaving = asyncio.ensure_future(sending), asyncio.ensure_future(gone())
    try:
        await asyncio.wait([answer, leaving], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, leaving):
            if not task.done():
                task.cancel()
        for task in (answer, leaving):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return answer.result() if not answer.cancelled() else None


def _which(scope: Scope) -> str | None:
    """What a sandbox call needs from a node: a create (`_CREATE`), or the sandbox's id."""
    path: str = scope["path"]
    if path == _CREATE and scope["method"] == "POST":
        return _CREATE
    found = _HELD.match(path)
    return found.group(1) if found else None


async def close(app_state: object) -> None:
    found = getattr(app_state, "sandbox_relay", None)
    if isinstance(found, SandboxRelay):
        await found.close()
