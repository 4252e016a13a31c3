"""A stopping server gives the requests in flight REQUESTS_GRACE, then cuts them: an answer that
streams without end (a service's server-sent events through the proxy) held the stop for ever,
as a proxied send to a service that stopped reading did for its 300 s (server/main.py
`serving`; docs/architecture.md, "Stopping")."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
import uvicorn

from orch.server import main
from orch.server.main import bind, serving


async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app whose every answer streams a line a tenth of a second, without end."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    while True:
        await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
        await asyncio.sleep(0.1)


def test_a_stop_cuts_an_answer_that_streams_without_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "REQUESTS_GRACE", 1.0)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(endless, **serving()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            threading.Event().wait(0.05)
        with socket.create_connection(sock.getsockname()[:2], timeout=10) as client:
            client.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"data: tick" in client.recv(4096)
            server.should_exit = True  # as SIGTERM has it (handle_exit)
            thread.join(30)  # a bound, not a measure: before, it never ended
            assert not thread.is_alive(), "the stop waited on an endless answer"
    finally:
        server.force_exit = server.should_exit = True
        thread.join(10)
        sock.close()
