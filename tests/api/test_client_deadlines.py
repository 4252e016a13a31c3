"""The client's limits hold against servers that answer slowly or not at all (found by a tester):

- `Client(timeout=…)` is a deadline for the whole request, not for each socket read: an answer
  that trickles in a byte at a time held `Client(timeout=3)` for 129 s;
- a request that timed out is never sent again (on a kept-alive connection it was taken for a
  stale one and sent twice: a GET took twice the limit);
- `run.wait(timeout=S)` against a server that stopped answering raises TimeoutError after about S
  and one request's limit, not after twice the long poll's 30 s margin;
- a huge timeout, or a `transport` that is not httpx's, is refused in `Client()`;
- a gzip answer that does not decompress is a broken connection (ServerUnreachable), on either
  backend.

The fake servers are raw sockets on 127.0.0.1, each bounded: they stop after a few seconds or a
few hundred bytes whatever the client does. Nothing here asserts a duration: what shows the limit
held is what the server had sent, or been sent, when the client gave up.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from orch import Client
from orch.client.transport import Transport
from orch.errors import InvalidInput, ServerUnreachable

STEP = 0.02  # seconds between two bytes of a trickled answer
LONGEST_TIMEOUT = 365 * 24 * 3600.0  # docs/client.md: a client's timeout is at most a year
HEAD = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Slow-%d: %s\r\n" % (i, b"y" * 8) for i in range(25)) + b"\r\n"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class Fake:
    """A server on 127.0.0.1 that hands each connection to `serve(conn, fake)` in a thread of its
    own; `requests` counts the requests' heads it read (`read_head`)."""

    def __init__(self, serve: Callable[[socket.socket, Fake], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.serve = serve
        self.requests: list[bytes] = []
        self.sent = 0
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._one, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):  # the client gave up and closed
                self.serve(conn, self)

    def read_head(self, conn: socket.socket) -> bool:
        """Read one request's head; False when the client closed first."""
        got = b""
        while b"\r\n\r\n" not in got:
            data = conn.recv(65536)
            if not data:
                return False
            got += data
        self.requests.append(got.split(b"\r\n", 1)[0])
        return True

    def trickle(self, conn: socket.socket, data: bytes) -> None:
        """Send `data` a byte every STEP seconds, counting what was sent, until it is all sent or
        the client has closed."""
        for i in range(len(data)):
            if self.stop.is_set():
                return
            conn.sendall(data[i : i + 1])
            self.sent += 1
            time.sleep(STEP)

    def close(self) -> None:
        """Wait for the connections' threads (each ends by itself within seconds), then stop."""
        for thread in self.threads:
            thread.join(15)
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[socket.socket, Fake], None]], Fake]]:
    made: list[Fake] = []

    def make(serve: Callable[[socket.socket, Fake], None]) -> Fake:
        made.append(Fake(serve))
        return made[-1]

    yield make
    for server in made:
        server.stop.set()
        server.close()


def _trickled_head(conn: socket.socket, fake: Fake) -> None:
    if fake.read_head(conn):
        fake.trickle(conn, HEAD)


def _trickled_body(conn: socket.socket, fake: Fake) -> None:
    if fake.read_head(conn):
        body = b"[" + b" " * 300 + b"]"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        fake.trickle(conn, body)


@pytest.mark.parametrize(("serve", "total"), [(_trickled_head, len(HEAD)), (_trickled_body, 302)])
def test_an_answer_that_trickles_ends_at_the_clients_deadline(
    fake: Callable[[Callable[[socket.socket, Fake], None]], Fake],
    serve: Callable[[socket.socket, Fake], None],
    total: int,
) -> None:
    """Each byte comes well within the limit, so a limit on each read never ends the request
    (it waited for as long as the server kept sending); a deadline for the request does."""
    server = fake(serve)
    client = Client(url=server.url, token="orch_x", timeout=0.5)
    with client, pytest.raises(ServerUnreachable, match="did not answer in time") as late:
        client.agents.list()
    server.close()  # its thread ends once the client closed (or all is sent): `sent` is final
    assert "(ReadTimeout)" in late.value.message
    assert 0 < server.sent < total  # the client gave up while the server was still sending
    assert len(server.requests) == 1  # and did not ask again


def test_a_request_that_timed_out_on_a_kept_alive_connection_is_not_sent_again(
    fake: Callable[[Callable[[socket.socket, Fake], None]], Fake],
) -> None:
    """The first GET is answered and its connection kept; the second is never answered (the
    server stalls for 3 s, then closes). It was taken for a stale connection and sent again on a
    fresh one."""

    def serve(conn: socket.socket, fake: Fake) -> None:
        while fake.read_head(conn):
            if len(fake.requests) > 1:
                fake.stop.wait(3)  # stalled: nothing comes back
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]")

    server = fake(serve)
    transport = Transport(server.url, "orch_x", timeout=0.5)
    try:
        assert transport.get("/v1/agents") == []
        with pytest.raises(ServerUnreachable, match="did not answer in time"):
            transport.get("/v1/agents")
    finally:
        transport.close()
    server.stop.set()
    server.close()
    assert len(server.requests) == 2  # not 3: the request that timed out went once


def test_wait_with_a_timeout_ends_near_it_when_the_server_stops_answering(
    fake: Callable[[Callable[[socket.socket, Fake], None]], Fake],
) -> None:
    """The run is read, then its long poll is never answered (the server stalls for 5 s, then
    closes). wait(timeout=0.5) must not sit on the poll's 30 s margin: the poll's limit ends the
    client's limit (0.5 s) past the wait's timeout, and the wait raises TimeoutError. Before, the
    poll waited its 30.5 s (here: until the server closed, then once more on a fresh connection)
    and raised ServerUnreachable."""
    run = (
        b'{"id": "run_1", "agent": "slow", "agent_version": 1, "status": "running", '
        b'"environment": {"id": "env_1", "name": "python"}, "queued_at": "2026-12-04T10:00:00+00:00"}'
    )

    def serve(conn: socket.socket, fake: Fake) -> None:
        while fake.read_head(conn):
            if b"/logs" in fake.requests[-1]:
                fake.stop.wait(5)  # stalled
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(run), run))

    server = fake(serve)
    with Client(url=server.url, token="orch_x", timeout=0.5) as client:
        found = client.runs.get("run_1")
        with pytest.raises(TimeoutError, match=r"run_1 has not ended after 0\.5 s") as late:
            found.wait(timeout=0.5)
    server.stop.set()
    server.close()
    assert isinstance(late.value.__cause__, ServerUnreachable)
    assert sum(b"/logs" in r for r in server.requests) == 1  # the poll was not sent again


def test_each_long_poll_of_a_wait_with_a_timeout_is_cut_to_it() -> None:
    """A server that answers at once, with nothing new: every poll's read limit is what is left
    of the wait and one request's limit (2 s) more, never the poll's wait and 30 s."""
    limits: list[tuple[float, float]] = []
    run = {
        "id": "run_1",
        "agent": "slow",
        "agent_version": 1,
        "status": "running",
        "environment": None,
        "queued_at": None,
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            limits.append((float(request.url.params["wait"]), request.extensions["timeout"]["read"]))
            offsets = {"stdout": 0, "stderr": 0, "log": 0}
            body = {"stdout": "", "stderr": "", "log": "", "offsets": offsets, "status": "running"}
            return httpx.Response(200, json=body)
        return httpx.Response(200, json=run)

    c = Client(url="http://orch.test", token="orch_x", timeout=2, transport=httpx.MockTransport(answer))
    with c, pytest.raises(TimeoutError, match=r"has not ended after 0\.2 s"):
        c.runs.get("run_1").wait(timeout=0.2)
    assert limits and len(limits) < 10_000
    for _wait, read in limits:
        assert read <= 0.2 + 2  # what was left of the wait (at most 0.2 s) and the client's 2 s


@pytest.mark.parametrize("timeout", [1e10, 1e12, 1e18, 10**30, LONGEST_TIMEOUT + 1])
def test_a_timeout_no_socket_can_wait_is_refused_in_the_constructor(timeout: float) -> None:
    with pytest.raises(InvalidInput, match=r"client's timeout .* at most 31536000 seconds"):
        Client(url="http://127.0.0.1:9", token="orch_x", timeout=timeout)


def test_the_longest_timeout_is_taken(fake: Callable[[Callable[[socket.socket, Fake], None]], Fake]) -> None:
    def serve(conn: socket.socket, fake: Fake) -> None:
        if fake.read_head(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")

    server = fake(serve)
    with Client(url=server.url, token="orch_x", timeout=LONGEST_TIMEOUT) as client:
        assert client.agents.list() == []
    server.close()


@pytest.mark.parametrize("transport", [5, "httpx", httpx.Client()])
def test_a_transport_that_is_not_httpxs_is_refused_in_the_constructor(transport: object) -> None:
    with pytest.raises(InvalidInput, match=r"`transport` is .*, not an httpx transport"):
        Client(url="http://127.0.0.1:9", token="orch_x", transport=transport)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["plain", "httpx"])
def test_a_gzip_answer_that_does_not_decompress_is_a_broken_connection(
    fake: Callable[[Callable[[socket.socket, Fake], None]], Fake], backend: str
) -> None:
    def serve(conn: socket.socket, fake: Fake) -> None:
        if fake.read_head(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nabcde")

    server = fake(serve)
    transport = httpx.HTTPTransport() if backend == "httpx" else None
    client = Client(url=server.url, token="orch_x", transport=transport)
    with (
        client,
        pytest.raises(ServerUnreachable, match=r"Cannot reach the orch server at .*\(DecodingError\)"),
    ):
        client.agents.list()
    server.close()
