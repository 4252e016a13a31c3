"""uvicorn's HTTP protocol (httptools), with the writes of one turn of the event loop sent as one.

uvicorn writes an answer's status line and headers as soon as the app sends them, and its body
at the next message: two `send` calls, two TCP segments (the server's sockets have TCP_NODELAY).
For the services' proxy, which forwards small answers as fast as it can, the system calls are
most of its time: under `wrk`, ~35% of the event loop in uvicorn's writes to the client and ~27%
in the writes to the containers (py-spy, 2026-12-02). Here a connection's transport holds what is
written during one turn of the loop and sends it at the turn's end, so start and body leave in
one call. Nothing waits longer than that turn: a stream's chunks (SSE) still leave as they come.

A request the HTTP parser refuses before any app sees it (a URL or a header too long for it,
bytes that are not HTTP) is answered here too, and as every other error: 400 with orch's
`{error, message, fix}` body, where uvicorn says "Invalid HTTP request received." in plain text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop go out as one write of the
    transport it wraps; everything else is that transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

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
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport (`uvicorn.Config(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request (uvicorn logs `msg`): orch's error body, then close."""
        body = json.dumps(
            {
                "error": "invalid_input",
                "message": "The request could not be read as HTTP: it is malformed, or its URL or "
                "a header is too long (the URL may be up to about 64 KiB).",
                "fix": "Send a well-formed HTTP/1.1 request with a shorter URL; large data goes in "
                "the request body.",
            }
        ).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
