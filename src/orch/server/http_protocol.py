"""uvicorn's HTTP protocol (httptools), with the writes of one turn of the event loop sent as one.

uvicorn writes an answer's status line and headers as soon as the app sends them, and its body
at the next message: two `send` calls, two TCP segments (the server's sockets have TCP_NODELAY).
For the services' proxy, which forwards small answers as fast as it can, the system calls are
most of its time: under `wrk`, ~35% of the event loop in uvicorn's writes to the client and ~27%
in the writes to the containers (py-spy, 2026-12-02). Here a connection's transport holds what is
written during one turn of the loop and sends it at the turn's end, so start and body leave in
one call. Nothing waits longer than that turn: a stream's chunks (SSE) still leave as they come.

An answer an app cannot finish once it began (the services' proxy's, when a service breaks off its
own) is cut short when the app raises `CutShort`: its connection closed, one warning in the log.
uvicorn can only log an exception out of an app with its traceback, at error level, and an app
that returns with its answer unfinished as an error too.

A request the HTTP parser refuses before any app sees it (a URL or a header too long for it,
bytes that are not HTTP) is answered here too, and as every other error: 400 with orch's
`{error, message, fix}` body, where uvicorn says "Invalid HTTP request received." in plain text.

A connection closed after an answer while its request's body is still coming (an early answer:
the services' proxy's 413 or 401 from a service, with `Connection: close`) is closed as nginx's
`lingering_close` does: its sending side shut (the client reads the answer, then the end), the
rest of the body read and dropped until the client closes its side, for LINGER_TIME at most
(LINGER_QUIET without a byte, LINGER_BYTES in all), then closed. Closed at once, a kernel resets
a connection that holds unread bytes, and the reset can destroy the answer in the client's
buffer before the client read it: found by a tester, curl's upload of 30 MB with `Expect:
100-continue` (uvicorn answers 100 Continue as soon as the app reads the body) lost the
service's 413 to `Connection reset by peer` 1 to 4 times in 30.

And here a connection is bounded before any app sees it (`ConnectionLimits`): its request's head
has a deadline, and each port holds so many connections at once. uvicorn bounds neither: its
keep-alive timeout runs only between requests, and its `limit_concurrency` is looked at once a
head has ended (a 503 then), so a client that opens connections and sends a header line now and
then held each of them for ever, until the process had no file descriptor left (found by a
tester: ~20,000 such connections to the services' port, which needs no token, and the API
answered nothing, the supervisor's `podman ps` failed with EMFILE, runs and builds failed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger(__name__)

# How long a request's head may take (nginx's client_header_timeout): a client sends its head in
# one write or a few, within a round trip or two even on a poor link; a minute is for the worst
# of links, and for a browser's connection opened ahead of the request it may send on it.
HEAD_TIMEOUT = 60.0
# A port that holds its most connections says so in the log at most this often (seconds).
FULL_SAID_EVERY = 60.0
# A lingering close (nginx's lingering_time and lingering_timeout): how long the rest of a request's
# body is read and dropped after its answer at most, and without a byte of it; and how much of it.
LINGER_TIME = 30.0
LINGER_QUIET = 5.0
LINGER_BYTES = 64 * 1024 * 1024


class CutShort(Exception):
    """Raised by an app after its answer began, which it cannot finish: the connection is closed,
    so that the client sees the answer cut short (never a whole, shorter one), and the message
    is said in the log in one line, as a warning."""


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop go out as one write of the
    transport it wraps; everything else is that transport's. Its `close()` asks `linger` first,
    which may take the connection for a lingering close instead: the transport is closing from
    then on, and its next `close()` closes it."""

    __slots__ = ("_linger", "_lingering", "_loop", "_pending", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        linger: Callable[[], bool] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._linger = linger
        self._lingering = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._transport.is_closing():
            return  # as the transport itself would: what is written after close() is dropped
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._pending)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()  # what was written before close() is sent, as asyncio's transports do
        if not self._lingering and not self._transport.is_closing() and self._linger is not None:
            self._lingering = self._linger()
            if self._lingering:
                return
        self._transport.close()

    def is_closing(self) -> bool:
        return self._lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ConnectionLimits:
    """What one server's connections may hold (`CoalescingHttpTools.limited`), shared by all of
    them: how long a request's head may take, and how many connections the services' port and
    the API's port (any other port) may each hold open at once, with how many they hold."""

    def __init__(self, head_timeout: float, api: int, services: int, services_port: int | None) -> None:
        self.head_timeout = head_timeout
        self.services_port = services_port
        self.most = {False: api, True: services}  # by "is the services' port"
        self.open = {False: 0, True: 0}
        self._full_said = {False: -FULL_SAID_EVERY, True: -FULL_SAID_EVERY}

    @classmethod
    def of_process(cls, services_port: int | None) -> ConnectionLimits:
        """The bounds for this process, from its file descriptors (RLIMIT_NOFILE's soft limit).

        A connection to the services' port costs two (the client's, and the proxy's to the
        container, or a WebSocket's to it), one to the API's port one: the services' port may
        hold a quarter of the limit, the API's an eighth (its own budget, so no flood of the
        public port takes the API's connections, nor the other way). At least three eighths stay
        the process's own, whatever the ports get: the store's connections (SQLite: 48 kept),
        runs' and sandboxes' pipes, the supervisor's `podman` subprocesses, logs, the proxy's
        idle connections to the containers (up to 64 each). 1,024 descriptors: 256 and 128
        connections; 65,536 (what `orch server` raises its soft limit to when the hard limit
        lets it): 16,384 and 8,192."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        return cls(
            HEAD_TIMEOUT, api=max(1, soft // 8), services=max(1, soft // 4), services_port=services_port
        )

    def take(self, services: bool) -> bool:
        """Count one more connection on its port, or refuse it (False) when the port holds its
        most. The first refusal in FULL_SAID_EVERY seconds is said in the log."""
        if self.open[services] < self.most[services]:
            self.open[services] += 1
            return True
        now = time.monotonic()
        if now - self._full_said[services] >= FULL_SAID_EVERY:
            self._full_said[services] = now
            port = "services'" if services else "API's"
            log.warning(
                "the %s port holds %d connections, its most at once (a share of the process's "
                "limit of open files, RLIMIT_NOFILE): new ones are refused with 503 until some "
                "close.",
                port,
                self.most[services],
            )
        return False

    def give_back(self, services: bool) -> None:
        self.open[services] -= 1


class CoalescingHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport (`uvicorn.Config(http=...)`),
    bounded by `limits` when a server's class has them (`limited`).

    A request's head must end within `limits.head_timeout`, counted from the connection's start,
    or on a kept-alive connection from the head's first byte (until then the connection is idle,
    and uvicorn's keep-alive timeout closes it). Past it the connection is closed: with a 408 and
    orch's error body when part of a head came, silently when nothing did (a browser's
    connection opened ahead of a request is closed as an idle one is, with nothing it could read
    as the answer of the request it sends next). A connection over its port's budget is answered
    503 at once, before anything of it is read, and closed (a client that had sent its request
    before that answer may see the connection reset instead).

    One timer per connection watches the deadline, armed when a head is awaited and none is, and
    armed again when it finds the head it watched ended: a request on a kept-alive connection
    costs no timer of its own (the services' proxy answers thousands a second)."""

    limits: ClassVar[ConnectionLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._port: bool | None = None  # which budget counts the connection (None: none)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # when the awaited head's time began (None: none awaited)
        self._in_head = False  # part of a head came, not its end
        self._upgraded = False  # a WebSocket's now
        self._stopping = False  # the server stops: no lingering close
        self._linger_until: float | None = None  # lingering: until when at most (None: not)
        self._linger_heard = 0.0  # when the last byte came
        self._linger_dropped = 0  # bytes read and dropped
        self._linger_timer: asyncio.TimerHandle | None = None

    @classmethod
    def limited(cls, limits: ConnectionLimits) -> type[CoalescingHttpTools]:
        """This protocol for one server, bounded by `limits` (one count for all its connections)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop, self._linger)
        super().connection_made(coalescing)  # type: ignore[arg-type]
        limits = self.limits
        if limits is None:
            return
        services = self.server is not None and self.server[1] == limits.services_port
        if not limits.take(services):
            self._answer(
                503,
                "capacity_reached",
                "The server holds as many connections as it may at once.",
                "Try again in a few seconds.",
                b"retry-after: 5\r\n",
            )
            return
        self._port = services
        self._head_since = self.loop.time()
        self._head_timer = self.loop.call_later(limits.head_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._give_back()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger_until is None:
            super().data_received(data)
            return
        self._linger_heard = self.loop.time()  # the rest of an answered request's body: dropped
        self._linger_dropped += len(data)
        if self._linger_dropped > LINGER_BYTES:
            self.transport.close()

    def shutdown(self) -> None:
        self._stopping = True
        if self._linger_until is not None:
            self.transport.close()
        super().shutdown()

    def _linger(self) -> bool:
        """The transport is closed: whether the connection is taken for a lingering close (its
        request's body still coming), and if so, begin it."""
        cycle = self.cycle
        if self._stopping or self._upgraded or cycle is None or not cycle.more_body:
            return False
        if not self.transport.can_write_eof():
            return False
        self._stop_head_timer()
        self._linger_heard = self.loop.time()
        self._linger_until = self._linger_heard + LINGER_TIME
        self.transport.write_eof()  # after what was written: the answer, then the end
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_QUIET, self._linger_late)
        return True

    def _linger_late(self) -> None:
        """The lingering close's timer: close when its time is over, or no byte came for LINGER_QUIET."""
        self._linger_timer = None
        now = self.loop.time()
        until = self._linger_until or now
        if now >= until or now - self._linger_heard >= LINGER_QUIET:
            self.transport.close()
            return
        self._linger_timer = self.loop.call_later(
            min(until, self._linger_heard + LINGER_QUIET) - now, self._linger_late
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._port is None or self.limits is None:
            return
        if self._head_since is None:  # a kept-alive connection's next request: its time begins
            self._head_since = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_late)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_since = None
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        self._stop_head_timer()  # its head has ended; the WebSocket's pings watch it from now on
        self._upgraded = True
        super().handle_websocket_upgrade()
        if self._port is None:
            return
        # The connection is the WebSocket protocol's now, and only that protocol is told of its
        # end: it gives the connection's place in the budget back.
        websocket = self.transport.get_protocol()
        lost = websocket.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self._give_back()
            lost(exc)

        websocket.connection_lost = connection_lost  # type: ignore[method-assign]

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:  # type: ignore[override]
        async def run(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["http_version"] == "1.0":
                send = _close_delimited(cycle, send)
            try:
                await app(scope, receive, send)
            except CutShort as e:
                log.warning("%s", e)
                cycle.transport.close()
                cycle.disconnected = True  # as it is a moment later: uvicorn has nothing more to say

        super()._start_asgi_task(cycle, run)  # type: ignore[arg-type]

    def _give_back(self) -> None:
        if self._port is not None and self.limits is not None:
            self.limits.give_back(self._port)
        self._port = None

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        """The timer's time: if the head it watched ended, wait for the one awaited now, if any;
        if that one did not end in time, close the connection, with a 408 if part of a head came
        and no answer is being written on it (a pipelined request's)."""
        self._head_timer = None
        if self._head_since is None or self.limits is None or self.transport.is_closing():
            return
        left = self._head_since + self.limits.head_timeout - self.loop.time()
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._head_late)
        elif self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._answer(
                408,
                "invalid_input",
                "The request's head (its request line and headers) did not come whole within "
                f"{self.limits.head_timeout:g} s.",
                "Send the request line and headers at once; the body may follow at its own pace.",
            )
        else:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request (uvicorn logs `msg`): orch's error body, then close."""
        self._answer(
            400,
            "invalid_input",
            "The request could not be read as HTTP: it is malformed, or its URL or "
            "a header is too long (the URL may be up to about 64 KiB).",
            "Send a well-formed HTTP/1.1 request with a shorter URL; large data goes in the request body.",
        )

    def _answer(self, status: int, error: str, message: str, fix: str, extra: bytes = b"") -> None:
        """Answer with orch's error body, and close: for what no app sees."""
        body = json.dumps({"error": error, "message": message, "fix": fix}).encode()
        head = [STATUS_LINES[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            extra,
            b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _close_delimited(cycle: RequestResponseCycle, send: Send) -> Send:
    """`send` for a request of HTTP/1.0: an answer of no Content-Length goes without
    Transfer-Encoding, its body ending with the connection (uvicorn closes a 1.0 request's
    connection after its answer). uvicorn sent it chunked, as to any request (RFC 9112 §6.1: a
    server must not send Transfer-Encoding to a request of HTTP/1.0, whose client reads the chunk
    sizes as the body's bytes); found by a tester, through the services' proxy. uvicorn counts a
    body not chunked against its length: each piece is counted as it goes."""

    unframed = False  # the answer's body goes as it comes, to the connection's end

    async def send_10(message: Message) -> None:
        nonlocal unframed
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"transfer-encoding"]
            message = {**message, "headers": headers}
            if not any(k.lower() == b"content-length" for k, _ in headers):
                unframed = True
                cycle.chunked_encoding = False
        elif message["type"] == "http.response.body" and unframed:
            cycle.expected_content_length = len(message.get("body", b""))
        await send(message)

    return send_10


STATUS_LINES = {
    400: b"HTTP/1.1 400 Bad Request\r\n",
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\n",
}
