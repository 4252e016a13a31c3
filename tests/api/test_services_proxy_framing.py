"""The services' proxy keeps its kept-alive connections to a service in step: what a service
leaves after its answer is never the next caller's answer, and an answer whose end is ambiguous
is refused (docs/services.md, "Reaching a service"). Found by a hostile tester."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from orch.services import deployed as use_cases
from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nINJECT!"
MINE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine"


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


class KeptAlive:
    """A service that keeps its connections open and answers each request with the bytes the
    test put under its path, as they are, in one write; it counts its connections."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.connections = 0
        self._open: list[socket.socket] = []

    def talk(self, conn: socket.socket) -> None:
        got = b""
        with conn, contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in got:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return  # the proxy closed it
                    got += chunk
                head, _, got = got.partition(b"\r\n\r\n")
                conn.sendall(self.answers[head.split(b" ")[1].decode()])

    def close(self) -> None:
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def kept_alive(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeptAlive]:
    service = KeptAlive()
    listener = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setattr(use_cases, "PORT", listener.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            if stop.is_set():
                conn.close()
                return
            service.connections += 1
            service._open.append(conn)
            threading.Thread(target=service.talk, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield service
    stop.set()
    socket.create_connection(listener.getsockname(), timeout=5).close()  # wakes its accept
    thread.join(5)
    listener.close()
    service.close()


@pytest.mark.parametrize(
    ("method", "answer", "got"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n" + INJECTED, (204, b"")),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n" + INJECTED, (304, b"")),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + INJECTED, (200, b"hello")),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nINJECT!", (200, b"")),
    ],
    ids=["a body on 204", "a body on 304", "beyond Content-Length", "a body on HEAD"],
)
def test_what_a_service_leaves_after_its_answer_is_never_the_next_callers_answer(
    api: httpx.Client,
    site: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    kept_alive: KeptAlive,
    method: str,
    answer: bytes,
    got: tuple[int, bytes],
) -> None:
    """A body on a 204, 304 or HEAD answer, or more than its Content-Length, was the answer the
    next request on the kept-alive connection read: an unrelated caller got `INJECT!`. The
    connection is closed after such an answer; the answer given stays as it was."""
    deployed(api, platform, tmp_path, {"main.py": ""})
    kept_alive.answers.update({"/evil": answer, "/mine": MINE})
    for _ in range(3):
        evil = site.request(method, "/services/team/web/evil")
        assert (evil.status_code, evil.content) == got
        mine = site.get("/services/team/web/mine")
        assert (mine.status_code, mine.content) == (200, b"mine")
    assert kept_alive.connections == 4  # one per answer with bytes after it, one kept for the rest


def test_a_service_in_step_keeps_one_connection(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, kept_alive: KeptAlive
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""})
    kept_alive.answers.update({"/mine": MINE, "/none": b"HTTP/1.1 204 No Content\r\n\r\n"})
    for path in ("/mine", "/none", "/mine"):
        assert site.get(f"/services/team/web{path}").status_code in (200, 204)
    assert site.head("/services/team/web/mine").headers["content-length"] == "4"
    assert kept_alive.connections == 1


class _HeadLikeGet(BaseHTTPRequestHandler):
    """The everyday service that writes a body on HEAD: http.server's handler with HTTP/1.1 and
    `do_HEAD = do_GET`. Its writes buffered (a framework's are): the body comes with the head."""

    protocol_version = "HTTP/1.1"
    wbufsize = 65536

    def do_GET(self) -> None:
        text = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_server_service_that_writes_a_body_on_head_does_not_spoil_the_next_request(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next caller got `503 ... did not answer (the answer is not HTTP/1.1)`: its answer's
    head was read after the HEAD's body."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HeadLikeGet)
    server.daemon_threads = True
    monkeypatch.setattr(use_cases, "PORT", server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        deployed(api, platform, tmp_path, {"main.py": ""})
        for n in range(3):
            head = site.head(f"/services/team/web/h{n}")
            assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "3")
            got = site.get(f"/services/team/web/g{n}")
            assert (got.status_code, got.content) == (200, f"/g{n}".encode())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"Content-Length: 3\r\nContent-Length: 10", "the answer has two lengths, Content-Length 3 and 10"),
        (b"Content-Length: -5", "the answer's Content-Length '-5' is not a number of bytes"),
        (
            b"Content-Length: 3\r\nTransfer-Encoding: chunked",
            "the answer has both Content-Length and Transfer-Encoding, two ends for its body",
        ),
    ],
    ids=["two lengths", "negative", "both"],
)
def test_an_answer_whose_end_is_ambiguous_is_a_503_in_a_sentence(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    kept_alive: KeptAlive,
    live: str,
    head: bytes,
    said: str,
) -> None:
    """Two different Content-Length headers were passed on: the client got both, then a cut
    connection, and the server's log a traceback (`Response content longer than Content-Length`);
    `-5`, or Content-Length beside Transfer-Encoding, were passed on as they were. Now orch's 503,
    as for a malformed head, and the connection to the service closed (RFC 9112 §6.3)."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    bad = b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + INJECTED
    kept_alive.answers.update({"/bad": bad, "/mine": MINE})
    with httpx.Client(base_url=f"{live}/services/team/web") as client:
        for _ in range(2):
            refused = client.get("/bad")
            assert refused.status_code == 503
            assert refused.json() == {
                "error": "service_unavailable",
                "message": f"The service web did not answer ({said}).",
                "fix": "See the service's status and its logs.",
            }
            mine = client.get("/mine")
            assert (mine.status_code, mine.content) == (200, b"mine")
    assert kept_alive.connections == 3  # each refused answer's closed


def test_a_length_said_twice_alike_is_passed_on_once(
    api: httpx.Client, platform: Platform, tmp_path: Path, kept_alive: KeptAlive, live: str
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    kept_alive.answers["/twice"] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    with httpx.Client(base_url=f"{live}/services/team/web") as client:
        got = client.get("/twice")
    assert (got.status_code, got.content, got.headers.get_list("content-length")) == (200, b"ok", ["2"])
