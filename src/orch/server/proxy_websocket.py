"""WebSockets through the services' proxy: the client's handshake is made again to the service
(the same token rule and headers as HTTP, its subprotocols), then messages go both ways as they
come, and a close on either side closes the other. A drain (a redeploy, stop or delete) or the
server's stop closes the client's side with a close frame (1012 service restart, 1001 going
away), so a client can tell it from a failure and reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State
from websockets.typing import Subprotocol

from orch import metrics
from orch.errors import OrchError, ServiceUnavailable
from orch.server import relay
from orch.server.proxy_headers import answer_headers, request_headers, subprotocols
from orch.services import deployed
from orch.services.platform import Platform
from orch.services.routing import Backend, Route, Routing


class Proxy(Protocol):
    """What of the proxy (server/proxy.py) a WebSocket needs."""

    platform: Platform
    routing: Routing
    for_node: bool  # a node's proxy: requests relayed by the cluster's servers only

    async def resolve(self, scope: Scope, workspace: str, name: str) -> tuple[Route, list[Backend]]: ...

    def upstream(self, route: Route, backend: Backend, target: str) -> relay.Upstream: ...


MAX_MESSAGE = 16 * 1024 * 1024  # as uvicorn's own limit for what the client sends
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0  # the closing handshake with a service, then its connection is dropped
SEND_TIMEOUT = 300.0  # for a service to take a message: as HTTP's between bytes (proxy_client.py)
# Close codes an endpoint never sends (RFC 6455 §7.4.1): no status, or no close frame at all.
_NO_STATUS, _ABNORMAL, _INTERNAL = 1005, 1006, 1011
_HTTP_1_0, _HTTP_1_1 = b"HTTP/1.0", b"HTTP/1.1"


class _Connection(ClientConnection):
    """The `websockets` client's connection, which also reads a service's answer in HTTP/1.0
    (python's http.server answers so by default, as the README's example service does): the
    library takes only HTTP/1.1, and would fail on the answer instead of passing it back. The
    two write an answer alike; one that is not `101` ends the connection either way, and 1.0
    has no `101`. Found by a tester: such an answer was a 500 and a traceback in the log."""

    _head: bytes | None = b""  # the answer's first bytes until its version is known; then None

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            data = self._head + data
            if len(data) < len(_HTTP_1_0) and _HTTP_1_0.startswith(data):
                self._head = data
                return
            self._head = None
            if data.startswith(_HTTP_1_0):
                data = _HTTP_1_1 + data[len(_HTTP_1_0) :]
        super().data_received(data)

    def eof_received(self) -> None:
        if self._head:
            head, self._head = self._head, None
            super().data_received(head)
        super().eof_received()


async def forward_websocket(
    proxy: Proxy, scope: Scope, receive: Receive, send: Send, workspace: str, name: str, path: str
) -> None:
    started = time.perf_counter()
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        route, backends = await proxy.resolve(scope, workspace, name)
    except OrchError as e:
        await _refuse(scope, send, e.http_status, e.to_dict())
        if e.http_status != 401:
            metrics.of(proxy.platform).proxy_request(e.http_status, time.perf_counter() - started)
        return
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in request_headers(scope, route, proxy.for_node)
        if k not in (b"user-agent",)
    ]
    user_agent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"user-agent"), None)
    query = scope.get("query_string", b"").decode("latin-1")
    backend = backends[0]
    to = proxy.upstream(route, backend, path + (f"?{query}" if query else ""))
    headers += [(k.decode("latin-1"), v.decode("latin-1")) for k, v in to.headers]
    url = f"ws://{relay.format_address(to.host, to.port)}{to.target}"
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=[Subprotocol(p) for p in subprotocols(scope)] or None,
            compression=None,  # a hop on the machine's own bridge: not worth the CPU
            proxy=None,  # the service is on the local bridge: never through an egress proxy
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            max_size=MAX_MESSAGE,
            user_agent_header=user_agent,
            create_connection=_Connection,
        )
    except InvalidStatus as e:  # the service answered the handshake with an HTTP answer of its own
        answer = e.response
        await _relay(scope, send, answer.status_code, list(answer.headers.raw_items()), bytes(answer.body))
        metrics.of(proxy.platform).proxy_request(e.response.status_code, time.perf_counter() - started)
        return
    except (OSError, TimeoutError, ValueError, InvalidHandshake) as e:
        # No answer, or one that is not HTTP, or a 101 that is not a WebSocket's.
        error = ServiceUnavailable(
            f"The service {route.name} did not take the WebSocket ({_why(e)}).",
            deployed.SEE_STATUS_AND_LOGS,
        )
        await _refuse(scope, send, error.http_status, error.to_dict())
        metrics.of(proxy.platform).proxy_request(error.http_status, time.perf_counter() - started)
        return
    accept: dict[str, Any] = {"type": "websocket.accept", "subprotocol": upstream.subprotocol}
    extra = (
        [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in upstream.response.headers.raw_items()
            if not k.lower().startswith("sec-websocket-")
        ]
        if upstream.response is not None
        else []
    )
    accept["headers"] = answer_headers(extra)
    await send(accept)
    metrics.of(proxy.platform).proxy_request(101, time.perf_counter() - started)
    with proxy.routing.long_lived(backend.container, "websocket") as conn:
        await _relay_messages(receive, send, upstream, conn.closing, lambda: (conn.code, conn.reason))


def _why(error: Exception) -> str:
    """What went wrong in the handshake, in the library's words where it has some."""
    cause = error.__cause__ if error.__cause__ is not None else error
    text = str(cause)[:200] if isinstance(error, InvalidHandshake) else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


async def _relay_messages(
    receive: Receive, send: Send, upstream: ClientConnection, closing: asyncio.Event, why: Any
) -> None:
    async def from_client() -> tuple[int, str]:
        """The client's messages, the next read once the last is in the service's socket: a
        service that does not read holds the client back through TCP (uvicorn reads no further
        meanwhile), and the proxy holds one message. One the service has not taken in
        SEND_TIMEOUT ends the WebSocket (TimeoutError): waiting on it sees no client that goes."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1000), str(message.get("reason") or "")
            if message["type"] == "websocket.receive":
                text = message.get("text")
                async with asyncio.timeout(SEND_TIMEOUT):
                    await upstream.send(text if text is not None else message.get("bytes") or b"")

    async def from_service() -> None:
        """The service's messages, the next read once the last is in the client's socket: a
        client that does not read holds the service back the same way, and a message the client
        has not taken in SEND_TIMEOUT ends the WebSocket (TimeoutError), as the other way."""
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                key = "text" if isinstance(data, str) else "bytes"
                async with asyncio.timeout(SEND_TIMEOUT):
                    await send({"type": "websocket.send", key: data})

    client = asyncio.ensure_future(from_client())
    service = asyncio.ensure_future(from_service())
    drained = asyncio.ensure_future(closing.wait())
    try:
        done, _ = await asyncio.wait({client, service, drained}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (client, service, drained):
            task.cancel()
        for task in (client, service, drained):
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await task
    if client in done and not client.cancelled() and client.exception() is None:
        code, reason = client.result()
        await _close(upstream, code if code not in (_NO_STATUS, _ABNORMAL) else 1000, reason)
        return
    to_service = (1001, "the client's connection was closed")
    if drained in done:
        code, reason = why()
    elif client in done and not client.cancelled() and isinstance(client.exception(), TimeoutError):
        code, reason = _INTERNAL, f"the service took no message for {SEND_TIMEOUT:g} s"
        to_service = (code, reason)
    elif service in done and not service.cancelled() and isinstance(service.exception(), TimeoutError):
        # The client reads nothing: its close frame would wait behind what it did not read, so
        # that write is bounded as the service's (uvicorn then drops the connection).
        code, reason = _INTERNAL, f"the client took no message for {SEND_TIMEOUT:g} s"
        to_service = (code, reason)
    else:  # the service closed (or its connection broke)
        code = upstream.close_code if upstream.close_code is not None else _ABNORMAL
        reason = upstream.close_reason or ""
        code = {_NO_STATUS: 1000, _ABNORMAL: _INTERNAL}.get(code, code)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await send({"type": "websocket.close", "code": code, "reason": reason})
    await _close(upstream, *to_service)


async def _close(upstream: ClientConnection, code: int, reason: str) -> None:
    """The closing handshake with the service, for CLOSE_TIMEOUT at most, then its connection
    dropped. The library bounds its wait for the service's close frame but not the write of its
    own: a service that reads nothing (its socket's buffers full, as a client's flood leaves
    them) held that write, the relay, its connection and its count in
    `orch_proxy_open_connections` until the container went. Found by a tester."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await upstream.close(code, reason)
    except TimeoutError:
        pass
    finally:
        if upstream.state is not State.CLOSED:  # timed out, or cancelled (the server's stop)
            upstream.transport.abort()


async def _refuse(scope: Scope, send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await _relay(scope, send, status, [("content-type", "application/json")], data)


async def _relay(scope: Scope, send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    """An HTTP answer instead of the handshake, where the server can send one (ASGI's
    websocket.http.response); else a plain refusal (the server answers 403)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers if k.lower() != "content-length"]
    raw = [*answer_headers(raw), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
    await send({"type": "websocket.http.response.body", "body": body})
