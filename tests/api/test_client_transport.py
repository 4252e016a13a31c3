"""The client's HTTP layer over a real socket: `Transport` on `plain_http` (a socket, no httpx)
against a small HTTP/1.1 server that counts its connections, streams, stalls and closes on
demand; the same requests through httpx (the backend for https:// and proxies) answer the same."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from orch.client import plain_http
from orch.client.plain_http import PlainHTTP
from orch.client.transport import Transport, _Httpx
from orch.errors import Conflict, OrchError, ServerUnreachable


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: Stub

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def _send(self, status: int, body: bytes, kind: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/echo":
            self._json({"query": query, "auth": self.headers["Authorization"]})
        elif url.path == "/bye":  # answers, then closes the connection without saying so
            self._json({"ok": True})
            self.close_connection = True
        elif url.path == "/slow":
            time.sleep(float(query["s"]))
            self._json({"slept": True})
        elif url.path == "/gzip":
            self._send(200, gzip.compress(b'{"zipped": true}'), Content_Encoding="gzip")
        elif url.path == "/big":
            self._send(200, b"x" * 1_000_000, "application/octet-stream")
        elif url.path == "/conflict":
            self._json({"error": "conflict", "message": "It clashes.", "fix": "Do the other thing."}, 409)
        elif url.path == "/proxy-error":
            self._send(502, b"<html>bad gateway</html>", "text/html")
        elif url.path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif url.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                line = json.dumps({"n": i}).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                if i == 0:  # the rest only once the client has seen the first line
                    assert self.server.seen_first.wait(10)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._json({"error": "not_found", "message": f"No {url.path}.", "fix": ""}, 404)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        self._json({"got": json.loads(body), "type": self.headers["Content-Type"]}, 201)

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        self._json({"size": len(body), "first": body[:1].hex()})

    def do_DELETE(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.seen_first = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up waiting (the timeout test): nothing to report


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _transport(stub: Stub, monkeypatch: pytest.MonkeyPatch, backend: str) -> Transport:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = f"http://127.0.0.1:{stub.server_address[1]}"
    if backend == "plain":
        transport = Transport(url, "tok", timeout=2)
        assert isinstance(transport._backend, PlainHTTP)
    else:  # what https:// and proxies go through
        transport = Transport(url, "tok", transport=httpx.HTTPTransport(), timeout=2)
        assert isinstance(transport._backend, _Httpx)
    return transport


@pytest.fixture(params=["plain", "httpx"])
def http(stub: Stub, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Transport]:
    """The same requests through either backend must answer and fail the same."""
    transport = _transport(stub, monkeypatch, request.param)
    yield transport
    transport.close()


@pytest.fixture
def plain(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> Iterator[Transport]:
    transport = _transport(stub, monkeypatch, "plain")
    yield transport
    transport.close()


def test_the_plain_backend_needs_no_httpx(stub: Stub) -> None:
    code = (
        "import sys\n"
        "from orch.client.transport import Transport\n"
        f"print(Transport('http://127.0.0.1:{stub.server_address[1]}', 't').get('/echo')['auth'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore', 'h11', 'anyio')))\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.splitlines() == ["Bearer t", "[]"]


def test_requests_share_one_kept_alive_connection(http: Transport, stub: Stub) -> None:
    for i in range(5):
        answer = http.get("/echo", params={"i": i, "q": "a b&c"})
        assert answer == {"query": {"i": str(i), "q": "a b&c"}, "auth": "Bearer tok"}
    assert http.post("/things", json={"a": [1, "é"]}) == {"got": {"a": [1, "é"]}, "type": "application/json"}
    assert http.put("/file", content=b"\x00" * 300_000) == {"size": 300_000, "first": "00"}
    assert http.get("/gzip") == {"zipped": True}  # Content-Encoding: gzip, undone
    assert http.delete("/thing") is None
    assert stub.connections == 1


def test_empty_answers_big_answers_and_errors(http: Transport) -> None:
    assert http.get("/empty") is None  # 204
    assert http.send("GET", "/big").content == b"x" * 1_000_000
    with pytest.raises(Conflict) as clash:
        http.get("/conflict")
    assert (clash.value.message, clash.value.fix) == ("It clashes.", "Do the other thing.")
    with pytest.raises(OrchError, match="The server answered 502 Bad Gateway"):
        http.get("/proxy-error")


def test_a_connection_the_server_closed_is_not_reused(http: Transport, stub: Stub) -> None:
    assert http.get("/bye") == {"ok": True}
    time.sleep(0.2)  # the server has closed it by now
    assert http.post("/after", json=1)["got"] == 1  # not idempotent: never sent twice, so sent fresh
    assert http.get("/echo")["auth"] == "Bearer tok"
    assert stub.connections == 2


def test_a_connection_closed_after_the_check_is_retried_if_idempotent(
    plain: Transport, stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server may close an idle connection just after the check before reuse: a GET is sent
    again on a fresh one; a POST is not (the server might have acted on it), and fails."""
    monkeypatch.setattr(plain_http, "_closed_by_peer", lambda conn: False)
    assert plain.get("/bye") == {"ok": True}
    time.sleep(0.2)
    assert plain.get("/echo")["auth"] == "Bearer tok"
    assert stub.connections == 2
    assert plain.get("/bye") == {"ok": True}
    time.sleep(0.2)
    with pytest.raises(ServerUnreachable):
        plain.post("/after", json=1)
    assert plain.post("/after", json=2)["got"] == 2  # and the next one goes fresh


def test_an_answer_left_half_read_drops_its_connection(http: Transport, stub: Stub) -> None:
    with http.stream("GET", "/big") as resp:
        next(resp.iter_bytes())
    assert http.get("/echo")["auth"] == "Bearer tok"
    assert stub.connections == 2


def test_answers_stream_as_they_come(http: Transport, stub: Stub) -> None:
    lines = []
    with http.stream("GET", "/stream") as resp:
        for line in resp.iter_lines():
            lines.append(json.loads(line))
            stub.seen_first.set()  # the server sends the rest only now
    assert lines == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert http.get("/echo")["auth"] == "Bearer tok" and stub.connections == 1


def test_timeouts_and_refusals_are_server_unreachable(http: Transport, stub: Stub) -> None:
    with pytest.raises(ServerUnreachable, match="did not answer in time"):
        http.get("/slow", params={"s": 3})  # its timeout is 2 s
    assert http.get("/slow", params={"s": 0.1}, timeout=http.waiting(5)) == {"slept": True}
    port = stub.server_address[1]
    stub.shutdown()
    stub.server_close()
    with pytest.raises(ServerUnreachable, match=f"Cannot reach the orch server at http://127.0.0.1:{port}"):
        Transport(f"http://127.0.0.1:{port}", "t").get("/echo")


def test_a_proxy_in_the_environment_keeps_httpxs_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    proxied = Transport("http://127.0.0.1:1", "t")
    assert isinstance(proxied._backend, _Httpx)
    assert any(mount is not None for mount in proxied._backend.client._mounts.values())
    monkeypatch.delenv("HTTP_PROXY")
    assert isinstance(Transport("https://example.test", "t")._backend, _Httpx)


class Raw:
    """A server that answers each connection's first request with bytes given by the test, as
    they are, then closes: the framings a server may choose, and broken ones."""

    def __init__(self, answer: bytes) -> None:
        import socket

        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            got = b""
            while b"\r\n\r\n" not in got:
                got += conn.recv(65536)
            conn.sendall(self.answer)

    def close(self) -> None:
        self.thread.join(5)
        self.sock.close()


def _raw_get(answer: bytes) -> tuple[PlainHTTP, plain_http.Answer, bytes]:
    server = Raw(answer)
    client = PlainHTTP(server.url, {})
    try:
        with client.stream("GET", "/x", connect=2, read=2) as resp:
            body = resp.read()
            return client, resp, body
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answer", "body", "kept"),
    [
        # chunked, with a chunk extension and a trailer; headers in any case
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n",
            b"abcde",
            True,
        ),
        # no length, no chunks: the body ends with the connection, which is then not kept
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close", b"until the close", False),
        # HTTP/1.0 closes unless it says keep-alive
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
        # informational answers first; bare LFs as lenient readers accept them
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\nContent-Length: 1\n\nx", b"x", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\ny", b"y", False),
    ],
)
def test_every_framing_of_an_answer_is_read(answer: bytes, body: bytes, kept: bool) -> None:
    client, resp, read = _raw_get(answer)
    assert read == body
    assert resp.headers.get("content-type", "none") in ("text/plain", "none")
    assert bool(client._idle) is kept  # a connection goes back to the pool only if reusable
    client.close()


@pytest.mark.parametrize(
    ("answer", "kind", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "RemoteProtocolError", "not an HTTP/1.1 status line"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "ReadError",
            "closed before the answer's end",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "ReadError", "a bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "RemoteProtocolError", "a bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "RemoteProtocolError", "a bad header line"),
        (b"", "RemoteProtocolError", "closed in the middle of a line"),
    ],
)
def test_a_broken_answer_is_a_broken_connection_not_a_traceback(answer: bytes, kind: str, why: str) -> None:
    with pytest.raises(plain_http.Broken, match=why) as broken:
        _raw_get(answer)
    assert broken.value.kind == kind
    server = Raw(answer)  # and the user reads one sentence naming the kind
    try:
        with pytest.raises(ServerUnreachable, match=f"Cannot reach the orch server at .*{kind}"):
            Transport(server.url, "t", timeout=2).get("/x")
    finally:
        server.close()
