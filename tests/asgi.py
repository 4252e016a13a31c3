"""A synchronous httpx transport that calls an ASGI app in-process (httpx.ASGITransport is async)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio.from_thread
import httpx


class SyncASGITransport(httpx.BaseTransport):
    def __init__(self, app: Any, portal: anyio.from_thread.BlockingPortal) -> None:
        self._transport = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def call() -> httpx.Response:
            inner = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self._transport.handle_async_request(inner)
            content = await response.aread()
            # As a stream, so that the client reads it, closes it and times it (`elapsed`).
            stream = httpx.ByteStream(content)
            return httpx.Response(response.status_code, headers=response.headers, stream=stream)

        return self._portal.call(call)


@contextmanager
def in_process(app: Any) -> Iterator[SyncASGITransport]:
    with anyio.from_thread.start_blocking_portal() as portal:
        yield SyncASGITransport(app, portal)


def asgi_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """An HTTP request's ASGI scope, as uvicorn makes it, for calling the app directly."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
