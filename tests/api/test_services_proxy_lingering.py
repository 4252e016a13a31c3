"""What is left of a caller's body after a service's early answer (docs/services.md, "Reaching a
service"): the caller's connection ends with a lingering close, its answer read before the end,
never destroyed by a reset; a connection to the service on which it answered an upload's body
with an error is never the next request's. Found by a tester: curl's 30 MB upload (`Expect:
100-continue`) lost the service's 413 to `Connection reset by peer` 1 to 4 times in 30; a
service that answered 401 keep-alive to a small body and read no more held the next, unrelated
GET for 15 s, then it was a 503."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import httpx
import pytest

from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed, listening
from tests.api.test_services_proxy_early_answers import Early, early, status_and_body  # noqa: F401

UPLOAD = 20_000_000  # well past the kernels' buffers, well within a lingering close's bytes


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


@pytest.mark.parametrize("expect", [True, False], ids=["expect 100-continue", "no expect"])
def test_an_early_answer_survives_the_rest_of_the_upload(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    early: Early,  # noqa: F811 - the fixture
    live: str,
    expect: bool,
) -> None:
    """The caller sends its whole body before it reads (as curl goes on sending while the answer
    waits in its socket): the proxy reads and drops the rest, so the body goes whole, and the
    answer is there, then the connection's end. Before, the proxy closed its side with the body
    unread: its kernel reset the connection, the caller's send failed (curl's `(55) Send failure`)
    and the answer was lost with it."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    early.answers["/up"] = (
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo big\r\n"
    )
    port = int(live.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        head = f"POST /services/team/web/up HTTP/1.1\r\nHost: x\r\nContent-Length: {UPLOAD}\r\n"
        sock.sendall(head.encode() + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")
        if expect:  # orch's server answers 100 Continue as soon as the proxy reads the body
            got = b""
            while b"\r\n\r\n" not in got and (chunk := sock.recv(1)):
                got += chunk
            assert got == b"HTTP/1.1 100 Continue\r\n\r\n"
        failed: list[OSError] = []

        def send() -> None:
            try:
                sock.sendall(b"x" * UPLOAD)
            except OSError as e:
                failed.append(e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sender.join(20)
        assert not sender.is_alive()
        assert failed == []  # was [ConnectionResetError] or [BrokenPipeError]
        got = b""
        while chunk := sock.recv(65536):  # the answer, then the end (no reset)
            got += chunk
    line, headers, body = status_and_body(got)
    assert (line.split(b" ")[1], body) == (b"413", b"too big\r\n")
    assert headers[b"connection"] == b"close"


def test_a_connection_the_service_answered_an_upload_with_an_error_on_is_not_kept(
    api: httpx.Client, platform: Platform, tmp_path: Path, live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service answers 401 keep-alive to a small POST, its body sent with the head, and reads
    nothing more on that connection: the next GET goes on a new connection and is answered."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    stop = threading.Event()
    connections: list[socket.socket] = []

    def talk(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            got = b""
            while b"\r\n\r\n" not in got and (chunk := conn.recv(65536)):
                got += chunk
            if got.startswith(b"POST"):
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 7\r\n\r\nno auth")
                stop.wait(20)  # reads no more, the connection open
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def handle(conn: socket.socket) -> None:
        connections.append(conn)
        threading.Thread(target=talk, args=(conn,), daemon=True).start()

    with listening(monkeypatch, handle):
        try:
            url = f"{live}/services/team/web"
            refused = httpx.post(f"{url}/hold401", content=b"x" * 1024, timeout=10)
            assert (refused.status_code, refused.content) == (401, b"no auth")
            got = httpx.get(f"{url}/x", timeout=10)  # was: on the held connection, 503 after 10 s
            assert (got.status_code, got.content) == (200, b"ok")
            assert len(connections) == 2
        finally:
            stop.set()


def test_a_get_on_a_kept_connection_the_service_resets_is_sent_again_on_a_new_one(
    api: httpx.Client, platform: Platform, tmp_path: Path, live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service answers a first GET keep-alive, then resets that connection when the next GET
    comes on it, before any answer (as it may when it dropped the connection meanwhile): the GET
    goes again on a new connection, as nginx sends it, instead of a 503 `Connection reset by peer`."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    connections: list[socket.socket] = []

    def talk(conn: socket.socket, first: bool) -> None:
        with contextlib.suppress(OSError):
            for n in range(2):
                got = b""
                while b"\r\n\r\n" not in got and (chunk := conn.recv(65536)):
                    got += chunk
                if not got:
                    break
                if first and n == 1:  # the kept connection's next request: reset, no answer
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    break
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.close()

    def handle(conn: socket.socket) -> None:
        connections.append(conn)
        threading.Thread(target=talk, args=(conn, len(connections) == 1), daemon=True).start()

    with listening(monkeypatch, handle):
        url = f"{live}/services/team/web"
        for _ in range(2):
            got = httpx.get(f"{url}/x", timeout=10)  # the second was a 503
            assert (got.status_code, got.content) == (200, b"ok")
        assert len(connections) == 2
