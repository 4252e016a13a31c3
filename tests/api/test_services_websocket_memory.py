"""What the services' proxy holds of a WebSocket's messages when one side does not read (one
message each way, not what its libraries would read ahead), and how many WebSockets it holds
open at once (`max_websockets`).

Found by a tester: a client that never read a service that broadcast 16 MiB messages made the
server hold ~330 MB for it (the proxy's connection to the service read 16 messages ahead of it,
the library's default), and nothing bounded how many such clients the server served: ~60 idle
sockets against a public service took the platform's memory.

What the proxy holds is counted in bytes, not by its memory: what one side wrote, less what
waits in the kernel's buffers of the two connections (/proc/net/tcp's queues), less what the
other side read (nothing).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orch.server import proxy_websocket
from orch.services import deployed as use_cases
from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed, ws_url
from tests.api.test_services_websocket_close import answer_handshake, open_client

MiB = 1 << 20
MESSAGE = 4 * MiB
MESSAGES = 40  # far more than the kernel's buffers hold; what it was, the proxy read ahead


@pytest.fixture(autouse=True)
def answering(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    platform.probe = lambda address, port: True
    # The services here never answer a close frame: the proxy waits for it this long.
    monkeypatch.setattr(proxy_websocket, "CLOSE_TIMEOUT", 0.5)


def _frame(data: bytes, masked: bool) -> bytes:
    """A binary frame of `data`; a client's is masked, with a key of zeros (RFC 6455 lets a
    client pick any key: this one leaves the bytes as they are)."""
    head = b"\x82" + bytes([0xFF if masked else 0x7F]) + len(data).to_bytes(8, "big")
    return head + (b"\0\0\0\0" if masked else b"") + data


class Flood:
    """One end of a WebSocket writing binary frames of MESSAGE bytes as fast as they are taken,
    reading nothing: how many bytes it has written."""

    def __init__(self, sock: socket.socket, masked: bool) -> None:
        self.sock = sock
        self.frame = _frame(b"\x5a" * MESSAGE, masked)
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        self.sock.settimeout(0.2)
        view = memoryview(self.frame)
        for _ in range(MESSAGES):
            at = 0
            while at < len(view):
                if self.stop.is_set():
                    return
                try:
                    n = self.sock.send(view[at:])
                except TimeoutError:
                    continue
                except OSError:
                    return
                at += n
                self.sent += n

    def held_back(self) -> int:
        """The bytes written once nothing more was taken for a second (or after 30 s)."""
        last, since = -1, time.monotonic()
        deadline = since + 30
        while time.monotonic() < deadline and time.monotonic() - since < 1:
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            time.sleep(0.05)
        return self.sent

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


class Service:
    """A WebSocket service that answers each handshake by hand, then leaves its connection to
    the test (`connection`)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        # Small buffers on the service's side (its connections inherit them).
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.accepted: list[socket.socket] = []
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            answer_handshake(conn)
            self.accepted.append(conn)

    def connection(self) -> socket.socket:
        """The proxy's next connection, its handshake answered."""
        deadline = time.monotonic() + 10
        while not self.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.accepted.pop(0)

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    made = Service()
    monkeypatch.setattr(use_cases, "PORT", made.port)
    yield made
    made.close()


def queued(sock: socket.socket) -> int:
    """The bytes the kernel holds of `sock`'s connection, at both of its ends (a loopback
    connection's two sockets are both this machine's): sent and not yet read by the other end
    (tx_queue), received and not yet read by the socket's own process (rx_queue)."""
    ends = {
        (_hex(sock.getsockname()), _hex(sock.getpeername())),
        (_hex(sock.getpeername()), _hex(sock.getsockname())),
    }
    found = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) in ends:
                tx, rx = fields[4].split(":")
                found += int(tx, 16) + int(rx, 16)
    return found


def _hex(address: tuple[str, int]) -> str:
    return socket.inet_aton(address[0])[::-1].hex().upper() + f":{address[1]:04X}"


@pytest.mark.parametrize("writer", ["service", "client"])
def test_a_side_that_never_reads_makes_the_proxy_hold_less_than_a_message_of_the_other(
    api: httpx.Client, platform: Platform, tmp_path: Path, service: Service, live: str, writer: str
) -> None:
    """The service writes to a client that never reads, or the other way. Before, the proxy
    read 17 messages ahead of a client (the library's queue, and one in hand), and one ahead of
    a service (uvicorn read the client's next message while the last was written)."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    client = open_client(live)
    conn = service.connection()
    flood = Flood(conn, masked=False) if writer == "service" else Flood(client, masked=True)
    try:
        sent = flood.held_back()
        holds = sent - queued(client) - queued(conn)
    finally:
        flood.close()
        client.close()
        # The service's side too: else the proxy's send of the client's message waits on it for
        # SEND_TIMEOUT (a client that goes is not seen meanwhile), holding the server's shutdown.
        conn.close()
    assert sent < MESSAGES * MESSAGE, "nothing held the writer back"
    assert holds < MESSAGE, f"the proxy holds {holds / MiB:.1f} MiB of {MESSAGE / MiB:.0f} MiB messages"


def test_websockets_past_max_websockets_are_refused_until_one_closes(
    api: httpx.Client, platform: Platform, tmp_path: Path, service: Service, live: str
) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    platform.config = platform.config.with_values(max_websockets=2)
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    url = ws_url(live, "/services/team/web/ws")
    with connect(url, proxy=None) as first, connect(url, proxy=None):
        with pytest.raises(InvalidStatus) as refused, connect(url, proxy=None):
            pass
        answer = refused.value.response
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        body = answer.body.decode()
        assert '"error": "capacity_reached"' in body
        assert "holds 2 WebSockets to services, its most at once (max_websockets" in body
        assert len(service.conns) == 2  # refused before any connection to the service
        assert 'orch_proxy_requests_total{code="5xx"} 1.0' in api.get("/metrics").text
        first.close()
        deadline = time.monotonic() + 10
        while True:  # its place is given back once its relay has ended
            try:
                with connect(url, proxy=None):
                    break
            except InvalidStatus:
                assert time.monotonic() < deadline, "a closed WebSocket's place was not given back"
                time.sleep(0.05)


def test_a_client_message_over_16_mib_ends_the_websocket_with_1009(
    api: httpx.Client, platform: Platform, tmp_path: Path, service: Service, live: str
) -> None:
    """The bound on messages holds both ways: the service's by the proxy's connection to it,
    the client's by uvicorn's own (`ws_max_size`, 16 MiB by default), read no further than its
    frame's head; the proxy closes the service's side with its code."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    with connect(ws_url(live, "/services/team/web/ws"), proxy=None, compression=None) as ws:
        conn = service.connection()
        with contextlib.suppress(ConnectionClosed):  # it may see its connection reset as it writes
            ws.send(b"\0" * (16 * MiB + 1))
        with pytest.raises(ConnectionClosed):
            ws.recv(10)
    # The service was sent no part of it: a close frame of the proxy's with the client's code.
    conn.settimeout(10)
    head = conn.recv(2, socket.MSG_WAITALL)
    assert head[0] == 0x88, head  # a close frame, whole
    mask = conn.recv(4, socket.MSG_WAITALL)
    payload = conn.recv(head[1] & 0x7F, socket.MSG_WAITALL)
    code = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))[:2]
    assert int.from_bytes(code, "big") == 1009
