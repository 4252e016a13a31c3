"""A WebSocket through the services' proxy to a service that never reads: the client is held
back, and whichever way the WebSocket ends, the proxy's connection to the service ends too. And
the other way: a client that never reads holds a service that writes back, for SEND_TIMEOUT.

Found by a tester: a client flooded 1 MiB messages at a service that only wrote, then closed;
the server's connection to the service stayed open (its send queue full) and counted in
`orch_proxy_open_connections` until the container went, the relay stuck in the closing
handshake towards a service that would never take its close frame. (The ~2 GB the client's
library reported "sent" were never in the server: uvicorn's side of a WebSocket takes
permessage-deflate, so a flood of repeated bytes waited ~1000:1 compressed in the two sockets'
kernel buffers; random bytes hold the client back after a few MiB, as here without compression.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from orch.server import proxy_websocket
from orch.services import deployed as use_cases
from orch.services import routing
from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed, ws_url

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

MESSAGE = b"\0" * (1 << 20)
MAX_MESSAGES = 200  # far more than a few small socket buffers hold
GAUGE = 'orch_proxy_open_connections{kind="websocket"}'


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


def answer_handshake(conn: socket.socket) -> None:
    """A service's side of a WebSocket's opening handshake, by hand: the request's head is read
    byte by byte to its end and no further (what follows is the client's first frame), then
    answered 101 with the key's accept value."""
    from websockets.utils import accept_key

    head = b""
    while b"\r\n\r\n" not in head and (chunk := conn.recv(1)):
        head += chunk
    key = next(
        line.split(":", 1)[1].strip()
        for line in head.decode("latin-1").split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
    )


def open_client(live: str) -> socket.socket:
    """A client's WebSocket through the proxy, its handshake's answer read to its end and no
    further, with small buffers."""
    host, port = live.removeprefix("http://").split(":")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    client.connect((host, int(port)))
    client.sendall(
        b"GET /services/team/web/ws HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    client.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head and (chunk := client.recv(1)):
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return client


class DeafService:
    """A WebSocket service that answers the handshake by hand, then never reads again; it writes
    a text frame every `tick` seconds (0: nothing at all)."""

    def __init__(self, tick: float, flood: bool = False) -> None:
        self.tick = tick
        self.flood = flood  # write 1 MiB binary frames as fast as they are taken instead
        self.cut = threading.Event()  # set when a write failed: the proxy dropped the connection
        self.listener = socket.socket()
        # Small buffers on the service's side (its connection inherits them): filled by a few MiB.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(10)
        self.conn: socket.socket | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.conn = conn
        answer_handshake(conn)
        frame = b"\x82\x7f" + len(MESSAGE).to_bytes(8, "big") + MESSAGE if self.flood else b"\x81\x04tick"
        conn.settimeout(30)
        while (self.flood or self.tick) and not self.stop.wait(0 if self.flood else self.tick):
            try:
                conn.sendall(frame)  # unmasked: a binary frame of MESSAGE, or a text one, "tick"
            except OSError:
                self.cut.set()
                return

    def closed_by_the_proxy(self) -> bool:
        """Whether the proxy's connection to the service has ended: what it wrote is read to its
        end (EOF or a reset); False if it is still open after 10 s without a byte."""
        assert self.conn is not None
        self.conn.settimeout(10)
        try:
            while self.conn.recv(1 << 20):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def deaf(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., DeafService]]:
    made: list[DeafService] = []

    def make(tick: float, flood: bool = False) -> DeafService:
        service = DeafService(tick, flood)
        monkeypatch.setattr(use_cases, "PORT", service.listener.getsockname()[1])
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


async def flood(ws: ClientConnection) -> int:
    """Send MESSAGE until a send is held back (the service reads nothing), or the proxy closes
    the WebSocket meanwhile; how many were sent."""
    from websockets.exceptions import ConnectionClosed

    for sent in range(MAX_MESSAGES):
        try:
            await asyncio.wait_for(ws.send(MESSAGE), 2)
        except (TimeoutError, ConnectionClosed):
            return sent
    raise AssertionError(f"{MAX_MESSAGES} MiB went to a service that reads nothing: no backpressure")


def wait_closed(platform: Platform) -> int:
    """The WebSockets still open through the proxy, once none is or after 10 s."""
    for _ in range(200):
        if not routing.of(platform).open_connections():
            break
        threading.Event().wait(0.05)
    return routing.of(platform).open_connections()


def test_a_client_that_closes_after_a_flood_frees_the_connection_to_a_service_that_never_reads(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    deaf: Callable[..., DeafService],
    live: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tester's case: the service writes, never reads; the client floods, then closes."""
    from websockets.asyncio.client import connect
    from websockets.protocol import State

    monkeypatch.setattr(proxy_websocket, "CLOSE_TIMEOUT", 0.5)
    service = deaf(0.1)
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")

    async def client() -> None:
        url = ws_url(live, "/services/team/web/ws")
        ws = await connect(url, proxy=None, compression=None)
        assert await ws.recv(decode=True) == "tick"  # the service's side is open
        assert await flood(ws) < MAX_MESSAGES
        assert GAUGE + " 1.0" in api.get("/metrics").text
        # Its close frame waits behind its own messages, never read: the client gives up on the
        # closing handshake (its library, too, waits on that write until its next keepalive ping),
        # once the frame is written, as nothing it wrote can move any more.
        closing = asyncio.ensure_future(ws.close())
        async with asyncio.timeout(10):
            while ws.state is State.OPEN:
                await asyncio.sleep(0.01)
        ws.transport.abort()
        async with asyncio.timeout(10):
            await closing  # ended by the abort

    asyncio.run(client())
    assert wait_closed(platform) == 0
    assert GAUGE + " 0.0" in api.get("/metrics").text
    assert service.closed_by_the_proxy()


def test_a_message_a_service_never_takes_ends_the_websocket_with_1011(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    deaf: Callable[..., DeafService],
    live: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service that neither reads nor writes: were the client to go while the proxy waits for
    the service to take a message, nothing would tell the proxy (it reads the client no further
    meanwhile), so a message not taken in SEND_TIMEOUT ends the WebSocket on both sides."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    monkeypatch.setattr(proxy_websocket, "CLOSE_TIMEOUT", 0.5)
    monkeypatch.setattr(proxy_websocket, "SEND_TIMEOUT", 1.0)
    service = deaf(0)
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")

    async def client() -> tuple[int | None, str | None]:
        url = ws_url(live, "/services/team/web/ws")
        async with connect(url, proxy=None, compression=None, close_timeout=1) as ws:
            assert await flood(ws) < MAX_MESSAGES
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    await ws.recv()
            return ws.close_code, ws.close_reason

    assert asyncio.run(client()) == (1011, "the service took no message for 1 s")
    assert wait_closed(platform) == 0
    assert GAUGE + " 0.0" in api.get("/metrics").text
    assert service.closed_by_the_proxy()


def test_a_client_that_never_reads_ends_the_websocket_after_the_send_timeout(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    deaf: Callable[..., DeafService],
    live: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service that writes as fast as it can, a client that never reads (found by a tester):
    the proxy's write to the client waited for ever, holding the relay, its connection to the
    service (held back) and its count in orch_proxy_open_connections for as long as the client
    kept its socket open."""
    monkeypatch.setattr(proxy_websocket, "CLOSE_TIMEOUT", 0.5)
    monkeypatch.setattr(proxy_websocket, "SEND_TIMEOUT", 1.0)
    service = deaf(0, flood=True)
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    with open_client(live) as client:
        # Reads nothing more: the proxy's writes fill the client's socket, then the service's.
        assert service.cut.wait(20), "the proxy still holds the service's connection"
        assert wait_closed(platform) == 0
        assert GAUGE + " 0.0" in api.get("/metrics").text
        # And the client's connection is ended too: what it was sent reads to its end.
        read = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := client.recv(1 << 20):
                read += len(chunk)
                assert read < MAX_MESSAGES * len(MESSAGE), "the proxy kept writing to the client"
