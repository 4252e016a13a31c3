"""A service's early answer, sent before it read a large request's body (a 413 for its size, a
401, http.server's 501 for a method it does not serve), reaches the caller, and the caller's
connection is closed after it; and an HTTP/1.0 caller gets no chunked framing it cannot read
(docs/services.md, "Reaching a service"). Found by a tester: the early answer was replaced by
orch's `503 did not answer (Connection reset by peer)`; a 1.0 client read chunk sizes as body."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from orch.server import proxy_client
from orch.services import deployed as use_cases
from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed, listening

BIG = 5_000_000  # well past what the kernels' buffers hold between the client and the service
TOO_LARGE = b'{"error": "upload too large, max 1 MB"}'


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


class Early:
    """A service that reads a request's head only, answers with the bytes under its path, and
    closes (its kernel resets the connection: the body is unread); it keeps each request line."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.requests: list[bytes] = []

    def talk(self, conn: socket.socket) -> None:
        got = b""
        with conn, contextlib.suppress(OSError):
            while b"\r\n\r\n" not in got:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                got += chunk
            line = got.split(b"\r\n", 1)[0]
            self.requests.append(line)
            conn.sendall(self.answers[line.split(b" ")[1].decode()])


@pytest.fixture
def early(monkeypatch: pytest.MonkeyPatch) -> Iterator[Early]:
    service = Early()

    def handle(conn: socket.socket) -> None:
        threading.Thread(target=service.talk, args=(conn,), daemon=True).start()

    with listening(monkeypatch, handle):
        yield service


class _Limited(BaseHTTPRequestHandler):
    """The tester's service: python's http.server, refusing an upload over 1 MB from its
    Content-Length (413, unread, closed); no PUT (http.server's own 501)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        if n > 1_000_000:
            self.send_response(413)
            self.send_header("Content-Length", str(len(TOO_LARGE)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(TOO_LARGE)
            self.close_connection = True
            return
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Limited)
    server.daemon_threads = True
    monkeypatch.setattr(use_cases, "PORT", server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()
    thread.join(5)


def uploaded(live: str, method: str, path: str, body: bytes, closed: bool = True) -> bytes:
    """What a raw client gets for `method path` with `body` (sent from a thread, as curl sends
    while it reads), read until the proxy closes the connection (`closed`), else until the
    answer's Content-Length."""
    port = int(live.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"{method} /services/team/web{path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        sock.sendall(head.encode() + b"\r\n")

        def send() -> None:
            with contextlib.suppress(OSError):  # the proxy closes once it answered
                sock.sendall(body)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while (closed or not _whole(got)) and (chunk := sock.recv(65536)):
                got += chunk
        with contextlib.suppress(OSError):  # ends the sender's sendall (the proxy may have reset it)
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(10)
    return got


def _whole(raw: bytes) -> bool:
    """Whether `raw` holds an answer's head and all of its Content-Length."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    return bool(sep) and len(body) >= int(status_and_body(head + sep)[1].get(b"content-length", b"0"))


def status_and_body(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return lines[0], headers, body


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig", b"413"),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\nwho", b"401"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", b"200"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"200"),
    ],
    ids=["413", "401", "200 at once", "200, close-delimited"],
)
def test_an_answer_sent_before_the_body_was_read_reaches_the_caller(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    early: Early,
    live: str,
    answer: bytes,
    status: bytes,
) -> None:
    """Was `503 The service web did not answer (Connection reset by peer)`: the service's kernel
    reset the connection (its body unread), and the answer before the reset was dropped."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    early.answers["/up"] = answer
    line, headers, body = status_and_body(uploaded(live, "POST", "/up", b"x" * BIG))
    assert line.split(b" ")[1] == status
    if headers.get(b"transfer-encoding") == b"chunked":  # close-delimited, to an HTTP/1.1 caller
        body = b"".join(body.split(b"\r\n")[1:-2:2])
    assert body == answer.partition(b"\r\n\r\n")[2]
    assert headers[b"connection"] == b"close"  # the rest of the caller's body is not read


def test_http_servers_413_and_501_reach_the_caller(
    api: httpx.Client, platform: Platform, tmp_path: Path, limited: None, live: str
) -> None:
    """The tester's service: a 5 MB POST its 413 (was 503 `the connection failed`), a 5 MB PUT
    http.server's 501; a small POST its 200, on a connection that stays open."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    line, _, body = status_and_body(uploaded(live, "POST", "/upload", b"z" * BIG))
    assert (line, body) == (b"HTTP/1.1 413 Request Entity Too Large", TOO_LARGE)
    line, _, _ = status_and_body(uploaded(live, "PUT", "/upload", b"z" * BIG))
    assert line == b"HTTP/1.1 501 Not Implemented"
    with httpx.Client(base_url=f"{live}/services/team/web") as client:
        for _ in range(2):
            small = client.post("/upload", content=b"z" * 1000)
            assert (small.status_code, small.content) == (200, b"ok")


def test_the_unread_body_of_an_early_answer_is_never_taken_for_requests(
    api: httpx.Client, platform: Platform, tmp_path: Path, early: Early, live: str
) -> None:
    """A body made of requests: the caller gets the one answer, its connection closed after it,
    and no request in the body reaches the service (no desync)."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    early.answers["/up"] = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig"
    early.answers["/smuggled"] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    smuggled = b"GET /services/team/web/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    got = uploaded(live, "POST", "/up", smuggled * (BIG // len(smuggled)))
    assert got.count(b"HTTP/1.1 ") == 1 and got.endswith(b"\r\n\r\nbig")
    assert early.requests == [b"POST /up HTTP/1.1"]


def test_a_service_that_closes_without_an_answer_is_still_a_503(
    api: httpx.Client, platform: Platform, tmp_path: Path, early: Early, live: str
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    early.answers["/up"] = b""
    line, _, body = status_and_body(uploaded(live, "POST", "/up", b"x" * BIG, closed=False))
    assert line == b"HTTP/1.1 503 Service Unavailable"
    assert b"The service web did not answer" in body


def http10(live: str, path: str) -> bytes:
    """What an HTTP/1.0 client gets for GET `path`, read until the connection closes."""
    port = int(live.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /services/team/web{path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    return got


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world",
    ],
    ids=["chunked", "close-delimited"],
)
def test_an_http_1_0_caller_gets_a_body_that_ends_with_the_connection(
    api: httpx.Client, platform: Platform, tmp_path: Path, early: Early, live: str, answer: bytes
) -> None:
    """Was `transfer-encoding: chunked` and chunk sizes in the body, which a 1.0 client reads as
    the body's bytes (RFC 9112 §6.1: not to a request of HTTP/1.0)."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    early.answers["/stream"] = answer
    line, headers, body = status_and_body(http10(live, "/stream"))
    assert line == b"HTTP/1.1 200 OK"
    assert b"transfer-encoding" not in headers and b"content-length" not in headers
    assert (headers[b"connection"], body) == (b"close", b"hello world")
    early.answers["/sized"] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsized"
    line, headers, body = status_and_body(http10(live, "/sized"))
    assert (headers[b"content-length"], body) == (b"5", b"sized")


def test_an_early_answer_to_a_small_body_sent_slowly_reaches_the_caller_before_its_body_ends(
    api: httpx.Client, platform: Platform, tmp_path: Path, early: Early, live: str
) -> None:
    """A body of 64 KiB or less was sent whole before the answer was read: a caller that sends
    60 KiB in pieces got a 401 the service said at once only after its whole upload. This
    caller sends its next piece only once it has the answer (a timeout: the proxy waited)."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    early.answers["/up"] = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\nConnection: close\r\n\r\nwho"
    port = int(live.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"POST /services/team/web/up HTTP/1.1\r\nHost: x\r\nContent-Length: {60 * 1024}\r\n\r\n"
        sock.sendall(head.encode() + b"x" * 1024)  # the first piece; the rest would follow slowly
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):  # until the proxy closes the connection
                got += chunk
    line, headers, body = status_and_body(got)
    assert (line, body) == (b"HTTP/1.1 401 Unauthorized", b"who")
    assert headers[b"connection"] == b"close"  # the rest of the caller's body is not read
    assert early.requests == [b"POST /up HTTP/1.1"]


def test_a_service_that_answers_early_then_stops_reading_does_not_hold_the_upload_for_ever(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    live: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The service sends part of its answer, keeps its connection open and reads nothing more.
    Before, the proxy waited for the rest of the body to be sent, for ever: the caller never got
    the answer. Now after SEND_TIMEOUT the answer is the caller's, its connection closed after it,
    and the log says so in one warning line."""
    monkeypatch.setattr(proxy_client, "SEND_TIMEOUT", 0.3, raising=False)
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    go, done = threading.Event(), threading.Event()

    def talk(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            got = b""
            while b"\r\n\r\n" not in got and (chunk := conn.recv(65536)):
                got += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello")
            go.wait(10)  # the caller has the answer's head and first part: the rest of it
            conn.sendall(b" world")
            done.wait(10)  # open, unread, until the test ends

    def handle(conn: socket.socket) -> None:
        threading.Thread(target=talk, args=(conn,), daemon=True).start()

    port = int(live.rsplit(":", 1)[1])
    try:
        with (
            listening(monkeypatch, handle),
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ):
            head = f"POST /services/team/web/up HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG}\r\n\r\n"
            sock.sendall(head.encode())

            def send() -> None:
                with contextlib.suppress(OSError):  # the proxy closes once it answered
                    sock.sendall(b"x" * BIG)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            got = b""
            while b"hello" not in got and (chunk := sock.recv(65536)):
                got += chunk
            go.set()
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):  # until the proxy closes the connection
                    got += chunk
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(10)
    finally:
        done.set()
    line, headers, body = status_and_body(got)
    assert (line, body) == (b"HTTP/1.1 200 OK", b"hello world")
    assert headers[b"connection"] == b"close"
    [said] = [r for r in caplog.records if "read none of it" in r.getMessage()]
    assert said.levelname == "WARNING" and said.exc_info is None
    assert said.getMessage() == (
        "team/web answered before it read a request's body, then read none of it for 0.3 s: the "
        "rest was not sent, and its caller's connection is closed after the answer."
    )


def test_a_service_that_reads_none_of_a_body_and_never_answers_is_a_503_after_the_send_deadline(
    api: httpx.Client, platform: Platform, tmp_path: Path, live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the proxy waited for ever to send the body (no deadline), and so did its caller."""
    monkeypatch.setattr(proxy_client, "SEND_TIMEOUT", 0.3, raising=False)
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    done = threading.Event()

    def talk(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            got = b""
            while b"\r\n\r\n" not in got and (chunk := conn.recv(65536)):
                got += chunk
            done.wait(10)  # reads no more, answers nothing

    def handle(conn: socket.socket) -> None:
        threading.Thread(target=talk, args=(conn,), daemon=True).start()

    try:
        with listening(monkeypatch, handle):
            line, _, body = status_and_body(uploaded(live, "POST", "/up", b"x" * BIG, closed=False))
    finally:
        done.set()
    assert line == b"HTTP/1.1 503 Service Unavailable"
    assert json.loads(body)["message"] == (
        "The service web did not answer (it read none of the request's body for 0.3 s)."
    )
