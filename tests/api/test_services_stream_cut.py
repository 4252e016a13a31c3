"""An answer whose body is streaming when its replica is stopped (a redeploy replaces it, a stop
takes it down; the drain's time ran out with it still in flight) ends at once: the proxy cuts its
caller's connection, so the caller sees the answer cut, and says why in one warning line.

Found by a tester: a 40 MB download read at 1 MB/s through a redeploy got no byte more once its
old container was gone (the container's network goes with it, so the proxy got no end of its
connection either) and hung until the proxy's READ_TIMEOUT (300 s), its caller's connection held
all along. A request not answered yet already heard its 503 (tests/api/test_services_proxy_drain_cut.py).
Here the stand-in service does what that container did: once its container is removed, it writes
nothing more, and does not close its connection."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services import deployed as use_cases
from orch.services import routing
from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed

SIZE = 64 * 1024 * 1024  # far more than the sockets between the service and the caller hold
PIECE = 64 * 1024
READ_TIMEOUT = 5.0  # the caller's: a guard against a hang, not a measure of speed

REMOVED = threading.Event()  # the service's container was removed: its network is gone
DONE = threading.Event()  # the test is over: the stalled handler may leave


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


class _Download(BaseHTTPRequestHandler):
    """/big: SIZE bytes, as fast as they are read (Content-Length; chunked for /big?chunked),
    until the container is removed: then nothing more, the connection left open."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        chunked = self.path.endswith("?chunked")
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        piece = b"x" * PIECE
        framed = b"%x\r\n%s\r\n" % (PIECE, piece) if chunked else piece
        try:
            for _ in range(SIZE // PIECE):
                if REMOVED.is_set():
                    break
                self.wfile.write(framed)
        except OSError:  # the proxy closed its connection: the answer is over
            return
        DONE.wait(30)  # as a container whose network went: no byte more, no end

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def download(monkeypatch: pytest.MonkeyPatch, fake_engine: FakeEngine) -> Iterator[None]:
    REMOVED.clear()
    DONE.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Download)
    server.daemon_threads = True
    monkeypatch.setattr(use_cases, "PORT", server.server_address[1])
    remove = fake_engine.remove_container

    def removed(name: str, timeout: int = 10) -> None:
        remove(name, timeout)
        REMOVED.set()

    monkeypatch.setattr(fake_engine, "remove_container", removed)
    # A short drain: its length is not what is tested here, its end is.
    drain = routing.Routing.drain

    def short(
        self: routing.Routing, containers: list[str], code: int, reason: str, timeout: float = 0
    ) -> None:
        drain(self, containers, code, reason, 0.2)

    monkeypatch.setattr(routing.Routing, "drain", short)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    DONE.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("framing", "how", "reason"),
    [
        ("length", "redeploy", "web v2 replaces it"),
        ("chunked", "redeploy", "web v2 replaces it"),
        ("length", "stop", routing.STOPPED),
    ],
)
def test_a_streaming_answer_whose_replica_is_stopped_is_cut_at_once(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    live: str,
    download: None,
    caplog: pytest.LogCaptureFixture,
    framing: str,
    how: str,
    reason: str,
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    host, port = live.removeprefix("http://").split(":")
    query = "?chunked" if framing == "chunked" else ""
    with socket.create_connection((host, int(port)), timeout=READ_TIMEOUT) as caller:
        caller.sendall(f"GET /services/team/web/big{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        got = b""
        while len(got) < 1024 * 1024 and (chunk := caller.recv(PIECE)):  # the download is under way
            got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        if framing == "length":
            assert f"content-length: {SIZE}".encode() in head.lower()

        # Its replica goes while the caller reads on slowly (here: not at all meanwhile).
        def replace() -> None:
            if how == "redeploy":
                deployed(api, platform, tmp_path, {"main.py": "# v2\n"}, public="true")
            else:
                assert api.post("/v1/services/web/stop").status_code == 200

        with caplog.at_level(logging.WARNING):
            going = threading.Thread(target=replace)
            going.start()
            going.join(60)
            assert not going.is_alive()
            assert REMOVED.is_set()
            ended = False
            try:
                while chunk := caller.recv(PIECE):  # what the proxy had sent already, then its end
                    body += chunk
                ended = True
            except ConnectionResetError:
                ended = True
            except TimeoutError:  # before: no byte more, for the proxy's READ_TIMEOUT (300 s)
                pass
        assert ended, f"the caller's read hung after {len(body)} bytes: the answer was not cut"
    # Cut: less than the answer said it would be, and never a whole (chunked) answer.
    assert len(body) < SIZE
    assert not body.endswith(b"0\r\n\r\n")
    said = [r.getMessage() for r in caplog.records if "was cut" in r.getMessage()]
    assert said == [
        "team/web: The service's answer was still coming when the drain's time ran out. "
        f"(its replica was stopped: {reason}) Its caller's connection was cut."
    ]
