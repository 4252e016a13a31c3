"""WebSockets through the services' proxy: the client's handshake is made again to the service
(the same token rule and headers as HTTP, its subprotocols), then messages go both ways as they
come, and a close on either side closes the other. A drain (a redeploy, stop or delete) or the
server's stop closes the client's side with a close frame (1012 service restart, 1001 going
away), so a client can tell it from a failure and reconnect. A private service's WebSocket
keeps its token asked while it is open (`_watch_token`): once the token no longer opens the
service (revoked, or its workspace deleted) both sides are closed, 1008 "the token was revoked".

Each way the proxy holds one message at a time: it reads a side's next message once the last has
left the server for the other side's socket. Both libraries read ahead by themselves (the
service's connection 16 messages by default, uvicorn the client's next one as soon as the last is
taken) and ASGI's `send` returns once a message is in the write buffer, not out of it: found by
a tester, a client that never read a service broadcasting 16 MiB messages made the server hold
~330 MB for it (19.5 MB with 1 MiB messages), and nothing bounded how many such clients it
served. So the proxy holds each side's reading itself (`_Connection.hold`, `_ClientSide`), and
holds at most `max_websockets` WebSockets open at once (`_Open`; a new one past it is refused
with 503)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.exc import DBAPIError
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import Event, State
from websockets.typing import Subprotocol

from orch import metrics
from orch.errors import CapacityReached, OrchError, ServiceUnavailable, Unauthorized
from orch.server import relay
from orch.server.proxy_headers import answer_headers, request_headers, subprotocols
from orch.services import deployed, routing
from orch.services.platform import Platform
from orch.services.routing import Backend, Connection, Route, Routing
from orch.store.refusals import Outage

log = logging.getLogger(__name__)


class Proxy(Protocol):
    """What of the proxy (server/proxy.py) a WebSocket needs."""

    platform: Platform
    routing: Routing
    for_node: bool  # a node's proxy: requests relayed by the cluster's servers only

    async def resolve(self, scope: Scope, workspace: str, name: str) -> tuple[Route, list[Backend]]: ...

    async def token_workspace(self, scope: Scope) -> str: ...

    def store_trouble(self, scope: Scope, e: DBAPIError) -> OrchError | None: ...

    def upstream(self, route: Route, backend: Backend, target: str) -> relay.Upstream: ...


MAX_MESSAGE = 16 * 1024 * 1024  # as uvicorn's own limit for what the client sends
# What one WebSocket holds at most: a message each way, the one to the service twice while it is
# written (the message, and its masked frame in the write buffer). `max_websockets` of them may
# be open at once (config.py, its default counts them so: a quarter of the machine's memory).
HELD_AT_MOST = 3 * MAX_MESSAGE
# A WebSocket that moved a message this large gives the memory back to the system as it ends.
LARGE = 1024 * 1024
TRIM_AFTER = 1.0  # seconds; the WebSockets that end meanwhile give theirs back at once
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0  # the closing handshake with a service, then its connection is dropped
SEND_TIMEOUT = 300.0  # for a service to take a message: as HTTP's between bytes (proxy_client.py)
# Close codes an endpoint never sends (RFC 6455 §7.4.1): no status, or no close frame at all.
_NO_STATUS, _ABNORMAL, _INTERNAL = 1005, 1006, 1011
# A private service's WebSocket whose token no longer opens it: closed as a policy violation.
POLICY_VIOLATION, REVOKED = 1008, "the token was revoked"
# The store not answering while open WebSockets' tokens are asked again: one line in the log
# while it lasts, however many WebSockets ask.
_CHECKS = Outage(
    "asking the tokens of open WebSockets to private services", log, "they stay open, asked again"
)
_HTTP_1_0, _HTTP_1_1 = b"HTTP/1.0", b"HTTP/1.1"


class _Connection(ClientConnection):
    """The `websockets` client's connection, which also reads a service's answer in HTTP/1.0
    (python's http.server answers so by default, as the README's example service does): the
    library takes only HTTP/1.1, and would fail on the answer instead of passing it back. The
    two write an answer alike; one that is not `101` ends the connection either way, and 1.0
    has no `101`. Found by a tester: such an answer was a 500 and a traceback in the log.

    And whose reading the relay holds back while the client has not taken the last message
    (`hold`, `let_read`)."""

    _head: bytes | None = b""  # the answer's first bytes until its version is known; then None
    _last: Frame | None = None  # the last data frame read, which the library's parser keeps

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

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            self._last = event

    def hold(self) -> None:
        """Read nothing more from the service until `let_read` (what it writes waits in its
        socket, and holds it back): the message just taken is the one the proxy holds. The
        library's parser keeps the last frame it read until it reads the next one, a second
        copy of the message (its bytes as they came): let go here, if no other frame waits to
        be taken (the last frame read is then this message's)."""
        last, self._last = self._last, None
        if last is not None and isinstance(last.data, bytearray) and not len(self.recv_messages.frames):
            del last.data[:]
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def let_read(self) -> None:
        """Read from the service again, but while the library holds its own reading back: it
        does once it has read a message not taken yet (`max_queue=0`), and reads on when it is."""
        if not self.recv_messages.paused and not self.transport.is_closing():
            self.transport.resume_reading()


class _ClientSide:
    """The client's side of a WebSocket as uvicorn serves it (its websockets-sansio protocol,
    which `ws="auto"` picks with the `websockets` library installed), for what ASGI does not
    say: when a message sent to the client has left the server for its socket (`drained`;
    `send` returns once it is in the write buffer), and reading no more of the client while its
    last message goes to the service (`hold`; uvicorn reads the next one as soon as the last is
    taken). Behind any other server, or a `send` something wrapped, it knows neither, and the
    proxy holds a second message each way."""

    def __init__(self, send: Send) -> None:
        found = getattr(send, "__self__", None)
        self._protocol = found if isinstance(found, WebSocketsSansIOProtocol) else None

    async def drained(self) -> None:
        """Return once the write buffer is below its high-water mark (64 KiB); raise
        ClientDisconnected if the client has gone meanwhile, as `send` does. The server's writes
        of one turn of the event loop leave at its end (its transport coalesces them,
        server/http_protocol.py): one turn first, so that they have."""
        protocol = self._protocol
        if protocol is not None:
            await asyncio.sleep(0)
            await protocol.writable.wait()
            if protocol.disconnected:
                raise ClientDisconnected

    def hold(self) -> None:
        """Read nothing more from the client until `let_read`: its message just taken is the
        one the proxy holds."""
        protocol = self._protocol
        if protocol is not None and not protocol.transport.is_closing():
            protocol.transport.pause_reading()

    def let_read(self) -> None:
        """Read from the client again, but while uvicorn holds its own reading back: it does
        while a message it read waits to be taken, and reads on once it is."""
        protocol = self._protocol
        if protocol is not None and not protocol.read_paused and not protocol.transport.is_closing():
            protocol.transport.resume_reading()


async def forward_websocket(
    proxy: Proxy, scope: Scope, receive: Receive, send: Send, workspace: str, name: str, path: str
) -> None:
    started = time.perf_counter()
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        try:
            route, backends = await proxy.resolve(scope, workspace, name)
        except DBAPIError as e:  # the store, asked for a route or a private service's token
            if (down := proxy.store_trouble(scope, e)) is None:
                raise  # a bug: its traceback
            raise down from e
    except OrchError as e:
        await _refuse(scope, send, e)
        if e.http_status != 401:
            metrics.of(proxy.platform).proxy_request(e.http_status, time.perf_counter() - started)
        return
    try:
        OPEN.take(int(proxy.platform.config.max_websockets))
    except CapacityReached as e:
        await _refuse(scope, send, e)
        metrics.of(proxy.platform).proxy_request(e.http_status, time.perf_counter() - started)
        return
    largest = 0
    try:
        largest = await _open(proxy, scope, receive, send, route, backends, path, started)
    finally:
        OPEN.give_back()
        if largest >= LARGE:
            TRIM.soon()


async def _open(
    proxy: Proxy,
    scope: Scope,
    receive: Receive,
    send: Send,
    route: Route,
    backends: list[Backend],
    path: str,
    started: float,
) -> int:
    """Open the WebSocket to the service, then relay it; return the largest message it moved."""
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
            # The service's pong waits in its socket while the proxy holds the service back for
            # a client that has not taken the last message: SEND_TIMEOUT decides then, not the
            # keepalive's 20 s, which cut a slow client's WebSocket after ~40 s.
            ping_timeout=SEND_TIMEOUT,
            max_size=MAX_MESSAGE,
            max_queue=0,  # no message read ahead: pause reading while one waits to be taken
            user_agent_header=user_agent,
            create_connection=_Connection,
        )
        assert isinstance(upstream, _Connection)
    except InvalidStatus as e:  # the service answered the handshake with an HTTP answer of its own
        answer = e.response
        await _relay(scope, send, answer.status_code, list(answer.headers.raw_items()), bytes(answer.body))
        metrics.of(proxy.platform).proxy_request(e.response.status_code, time.perf_counter() - started)
        return 0
    except (OSError, TimeoutError, ValueError, InvalidHandshake) as e:
        # No answer, or one that is not HTTP, or a 101 that is not a WebSocket's.
        error = ServiceUnavailable(
            f"The service {route.name} did not take the WebSocket ({_why(e)}).",
            deployed.SEE_STATUS_AND_LOGS,
        )
        await _refuse(scope, send, error)
        metrics.of(proxy.platform).proxy_request(error.http_status, time.perf_counter() - started)
        return 0
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
        private = not proxy.for_node and not route.public  # a node's: its server asks the token
        watch = asyncio.ensure_future(_watch_token(proxy, scope, route, conn)) if private else None
        try:
            return await _relay_messages(
                receive, send, upstream, conn.closing, lambda: (conn.code, conn.reason)
            )
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch


async def _watch_token(proxy: Proxy, scope: Scope, route: Route, conn: Connection) -> None:
    """Close a private service's WebSocket (`conn`, as a drain closes it) once the token that
    opened it no longer opens the service: asked again each TOKEN_SECONDS as a new request's is
    (the proxy trusts a token it checked for that long), so a revoke, or its workspace's delete,
    ends it within two TOKEN_SECONDS. Found by a tester: one stayed open 45 s after the revoke.
    A store that does not answer closes nothing: the token is asked again at the next turn."""
    while True:
        await asyncio.sleep(routing.TOKEN_SECONDS)
        try:
            ws_id: str | None = await proxy.token_workspace(scope)
        except Unauthorized:  # the store knows the token no more
            ws_id = None
        except Exception as e:
            if _CHECKS.failed(e):
                continue
            log.exception("%s: asking the token of an open WebSocket failed", scope["path"])
            conn.close(_INTERNAL, "its token could not be checked")
            return
        _CHECKS.answered()
        if ws_id != route.workspace_id:
            conn.close(POLICY_VIOLATION, REVOKED)
            return


class _Open:
    """The WebSockets open through this process's proxies, at most `max_websockets` (one
    process's memory holds them all: a server's proxy, and a node's if it is one too). One is
    counted from before its connection to the service is made to after it is closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a node's proxy serves on a thread of its own
        self.count = 0

    def take(self, most: int) -> None:
        """Count one more (until `give_back`), or refuse it."""
        with self._lock:
            if self.count >= most:
                raise CapacityReached(
                    f"The server holds {self.count} WebSockets to services, its most at once "
                    f"(max_websockets: each may hold up to {HELD_AT_MOST >> 20} MiB of messages).",
                    "Try again in a few seconds. The server's operator may raise ORCH_MAX_WEBSOCKETS "
                    "(docs/configuration.md).",
                )
            self.count += 1

    def give_back(self) -> None:
        with self._lock:
            self.count -= 1


class _Trim:
    """Gives the memory large messages took back to the system (glibc's `malloc_trim`), once
    the WebSockets that moved them have ended. glibc keeps what is freed for the process's next
    allocations, and once a block it had mapped of its own (as it does past 128 KiB) is freed
    it maps none below that block's size any more: the next messages come from its heap, which
    it seldom gives back. Measured, 5 clients that never read a service sending 16 MiB messages:
    the server's memory grew by 123 MB, and 108 MB stayed once they had gone; `malloc_trim`
    gave them back in ~20 ms. At most one in TRIM_AFTER seconds, on a thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False
        self._trim: Callable[[], object] | None = None
        with contextlib.suppress(OSError, AttributeError):  # another C library: it has none
            libc = ctypes.CDLL(None)
            trim = libc.malloc_trim
            trim.argtypes = [ctypes.c_size_t]
            self._trim = lambda: trim(0)

    def soon(self) -> None:
        if self._trim is None:
            return
        with self._lock:
            if self._pending:
                return
            self._pending = True
        timer = threading.Timer(TRIM_AFTER, self._run)
        timer.daemon = True
        timer.start()

    def _run(self) -> None:
        with self._lock:
            self._pending = False
        if self._trim is not None:
            self._trim()


OPEN = _Open()
TRIM = _Trim()


def _why(error: Exception) -> str:
    """What went wrong in the handshake, in the library's words where it has some."""
    cause = error.__cause__ if error.__cause__ is not None else error
    text = str(cause)[:200] if isinstance(error, InvalidHandshake) else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


async def _relay_messages(
    receive: Receive, send: Send, upstream: _Connection, closing: asyncio.Event, why: Any
) -> int:
    """Relay the messages both ways until either side closes; return the largest one moved."""
    side = _ClientSide(send)
    largest = 0

    async def from_client() -> tuple[int, str]:
        """The client's messages, the next read once the last is in the service's socket: a
        service that does not read holds the client back through TCP, and the proxy holds one
        message. One the service has not taken in SEND_TIMEOUT ends the WebSocket (TimeoutError):
        waiting on it sees no client that goes."""
        nonlocal largest
        try:
            while True:
                side.let_read()
                message = await receive()
                side.hold()
                if message["type"] == "websocket.disconnect":
                    return int(message.get("code") or 1000), str(message.get("reason") or "")
                if message["type"] == "websocket.receive":
                    text = message.get("text")
                    data = text if text is not None else message.get("bytes") or b""
                    del message, text  # held no longer than it is sent
                    largest = max(largest, len(data))
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await upstream.send(data)
                    del data
        finally:
            side.let_read()  # the client's close frame is read: its closing handshake ends

    async def from_service() -> None:
        """The service's messages, the next read once the last is in the client's socket: a
        client that does not read holds the service back the same way, and a message the client
        has not taken in SEND_TIMEOUT ends the WebSocket (TimeoutError), as the other way."""
        nonlocal largest
        try:
            while True:
                try:
                    data = await upstream.recv()
                except ConnectionClosed:
                    return
                upstream.hold()
                largest = max(largest, len(data))
                key = "text" if isinstance(data, str) else "bytes"
                async with asyncio.timeout(SEND_TIMEOUT):
                    await send({"type": "websocket.send", key: data})
                    del data  # the copy in the write buffer is the one held
                    await side.drained()
                upstream.let_read()
        finally:
            upstream.let_read()  # the service's close frame is read: its closing handshake ends

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
        return largest
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
    return largest


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


async def _refuse(scope: Scope, send: Send, error: OrchError) -> None:
    headers = [("content-type", "application/json")]
    if error.retry_after:
        headers.append(("retry-after", str(error.retry_after)))
    await _relay(scope, send, error.http_status, headers, json.dumps(error.to_dict()).encode())


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
