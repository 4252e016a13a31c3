from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI

from orch.server import proxy, sandbox_relay
from orch.server.app import create_app
from orch.server.http_protocol import ConnectionLimits
from orch.server.main import bind
from orch.services.platform import Platform
from tests.asgi import in_process


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    """The server's app; builds run via drain()."""
    return create_app(platform, workers=False)


@contextmanager
def client_of(app: FastAPI, token: str) -> Iterator[httpx.Client]:
    """An in-process client of `app`, authenticated with `token`."""
    with (
        in_process(app) as transport,
        httpx.Client(
            transport=transport, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}
        ) as client,
    ):
        yield client
        transport._portal.call(sandbox_relay.close, app.state)  # a cluster's server's connections


@pytest.fixture
def api(app: FastAPI, workspace: tuple[str, str]) -> Iterator[httpx.Client]:
    """An in-process client of the app, authenticated as `workspace`; builds run via drain()."""
    with client_of(app, workspace[1]) as client:
        yield client


@pytest.fixture
def site(app: FastAPI, workspace: tuple[str, str]) -> Iterator[httpx.Client]:
    """An in-process client of the services' origin (the app the server serves on its services
    port), authenticated as `workspace`; the proxy's connections to the services closed after."""
    with (
        in_process(app.state.services_app) as transport,
        httpx.Client(
            transport=transport,
            base_url="http://127.0.0.1:8751",
            headers={"Authorization": f"Bearer {workspace[1]}"},
        ) as client,
    ):
        yield client
        transport._portal.call(proxy.close, app.state)


@pytest.fixture
def live(served: tuple[str, str]) -> str:
    """The services' URL of the server served on loopback (`served`)."""
    return served[1]


@contextmanager
def on_loopback(
    app: FastAPI, limits: Callable[[int], ConnectionLimits] | None = None
) -> Iterator[tuple[int, int]]:
    """The server's two origins served by uvicorn on loopback, as `orch server` serves them
    (bounded by `limits(services' port)`, else as the process allows): the API's port, the
    services' port."""
    import uvicorn

    from orch.server.main import by_port, serving

    socks = [bind("127.0.0.1", 0), bind("127.0.0.1", 0)]
    api_port, services_port = (s.getsockname()[1] for s in socks)
    both = by_port(app, app.state.services_app, services_port)
    config = uvicorn.Config(both, **serving(limits(services_port) if limits else None))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": socks}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield api_port, services_port
    finally:
        server.should_exit = True
        thread.join(10)
        for sock in socks:
            sock.close()


@pytest.fixture
def served(app: FastAPI) -> Iterator[tuple[str, str]]:
    """The server's two origins served by uvicorn on loopback, as `orch server` serves them (the
    in-process transport reads whole answers and knows no WebSocket): the API's URL, the
    services' URL."""
    with on_loopback(app) as (api_port, services_port):
        yield f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{services_port}"


def caller(
    url: str, method: str, target: str, headers: dict[str, str], body: object | None = None
) -> socket.socket:
    """A request sent by hand to a server served on loopback (`served`), its answer left unread:
    a caller that goes away when the test closes its socket, not after a client's timeout."""
    host, port = url.removeprefix("http://").split(":")
    content = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(content)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if body is not None:
        head += "Content-Type: application/json\r\n"
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode() + b"\r\n" + content)
    return sock


def unanswered(sock: socket.socket) -> bool:
    """Whether `sock` (a `caller`'s) is still waiting: no byte of an answer, nor its end, has
    reached it."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False
