"""The services' proxy keeps its kept-alive connections to a service in step: what a service
leaves after its answer is never the next caller's answer, an answer whose end is ambiguous or
whose head is malformed is refused, and one that breaks off is cut short for its caller with one
line in the log (docs/services.md, "Reaching a service"). Found by hostile testers."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from orch.services import deployed as use_cases
from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed, listening

INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nINJECT!"
MINE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine"


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


class KeptAlive:
    """A service that keeps its connections open and answers each request with the bytes the
    test put under its path, as they are, in one write (then closes the connection if the path
    is in `closing`); it counts its connections."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.closing: set[str] = set()
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
                path = head.split(b" ")[1].decode()
                conn.sendall(self.answers[path])
                if path in self.closing:
                    return

    def close(self) -> None:
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def kept_alive(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeptAlive]:
    service = KeptAlive()

    def handle(conn: socket.socket) -> None:
        service.connections += 1
        service._open.append(conn)
        threading.Thread(target=service.talk, args=(conn,), daemon=True).start()

    with listening(monkeypatch, handle):
        yield service
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


def refused_twice(live: str, kept_alive: KeptAlive, said: str) -> None:
    """/bad answered orch's 503 saying `said`, twice, its connection to the service closed each
    time, and /mine served between them."""
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
    refused_twice(live, kept_alive, said)


def test_a_length_said_twice_alike_is_passed_on_once(
    api: httpx.Client, platform: Platform, tmp_path: Path, kept_alive: KeptAlive, live: str
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    kept_alive.answers["/twice"] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    with httpx.Client(base_url=f"{live}/services/team/web") as client:
        got = client.get("/twice")
    assert (got.status_code, got.content, got.headers.get_list("content-length")) == (200, b"ok", ["2"])


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"HTTP/1.1 200 OK\r\nX-A: a\x00b", "the answer's header 'x-a' has a control character in its value"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\nb", "the answer's header 'x-a' has a control character in its value"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x7fb", "the answer's header 'x-a' has a control character in its value"),
        (b"HTTP/1.1 200 OK\r\nX A: b", "a header of the answer is malformed"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded: b", "a header of the answer is malformed"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded", "a header of the answer is malformed"),
        (b"HTTP/1.1 999 Nine", "the answer's status '999' is not one of HTTP's (100 to 599)"),
        (
            b"HTTP/1.1 " + b"2" * 5000 + b" Long",
            f"the answer's status '{'2' * 40}...' is not one of HTTP's (100 to 599)",
        ),
    ],
    ids=[
        "NUL in a value",
        "LF in a value",
        "DEL in a value",
        "space in a name",
        "folded",
        "folded, no colon",
        "status 999",
        "status of 5000 digits",
    ],
)
def test_an_answer_with_a_malformed_head_is_a_503_in_a_sentence(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    kept_alive: KeptAlive,
    live: str,
    head: bytes,
    said: str,
) -> None:
    """A NUL byte in a header value was passed to uvicorn, which refused it after the proxy had
    begun its answer: the client got an empty reply and the server's log a traceback (`Invalid
    HTTP header value.`); a status past 599 the same (uvicorn knows no status line for it); a
    folded header with a colon was passed on as a header of its own. Now orch's 503, as for the
    other malformed heads, and the connection to the service closed."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    kept_alive.answers.update({"/bad": head + b"\r\nContent-Length: 2\r\n\r\nok", "/mine": MINE})
    refused_twice(live, kept_alive, said)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b"Content-Length: 100\r\n\r\n" + b"x" * 50, "the answer ended before its Content-Length"),
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "the answer broke off"),
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", "the answer broke off"),
    ],
    ids=["short of its length", "chunked, cut", "chunked, malformed"],
)
def test_an_answer_that_breaks_off_is_cut_for_its_caller_with_one_line_in_the_log(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    kept_alive: KeptAlive,
    live: str,
    caplog: pytest.LogCaptureFixture,
    answer: bytes,
    said: str,
) -> None:
    """Each answer a service broke off logged a traceback of ~20 lines (`Exception in ASGI
    application ... UpstreamError`): any caller of a public service could fill the log. Its
    caller still gets a cut connection, never a whole short answer; the log one warning."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    kept_alive.answers.update({"/cut": b"HTTP/1.1 200 OK\r\n" + answer, "/mine": MINE})
    kept_alive.closing.add("/cut")
    # uvicorn's loggers do not propagate to the root as `orch server` configures them: watched
    # here too (a record seen both ways is one).
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO), httpx.Client(base_url=f"{live}/services/team/web") as client:
            with pytest.raises(httpx.RemoteProtocolError):
                client.get("/cut")
            mine = client.get("/mine")
            assert (mine.status_code, mine.content) == (200, b"mine")
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    records = list({id(r): r for r in caplog.records}.values())
    assert [r for r in records if r.levelno >= logging.ERROR or r.exc_info] == []
    lines = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert lines == [f"team/web: The service's answer broke off: {said}. Its caller's connection was cut."]
