"""Clients that never finish a request's head, and more connections than a port may hold, on a
real server on loopback (server/http_protocol.py, `ConnectionLimits`).

Found by a tester: uvicorn bounds neither how long a head may take (its keep-alive timeout runs
only between requests) nor how many connections are open. ~20,000 connections to the services'
port (no token needed), each sending a header line every 10 s, took every file descriptor of the
process: the API answered nothing, the supervisor's `podman ps` failed with EMFILE. Here the
deadline is half a second and the ports hold a few connections, so the tests are quick.
"""

from __future__ import annotations

import base64
import http.client
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from orch.engine.fake import FakeEngine
from orch.server import http_protocol
from orch.server.http_protocol import ConnectionLimits
from orch.server.node_proxy import NodeProxy
from tests.api.conftest import on_loopback
from tests.conftest import close_platform, make_platform

ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no store involved

DEADLINE = 0.5  # the server counts from its accept, which may come before connect() returns here
HEAD = b"GET /services/default/x/ HTTP/1.1\r\nHost: localhost\r\n"  # and never the empty line


@contextmanager
def bounded(
    app: FastAPI, head_timeout: float, api: int, services: int
) -> Iterator[tuple[int, int, ConnectionLimits]]:
    """The server's two origins served by uvicorn on loopback as `orch server` serves them, with
    these bounds: the API's port, the services' port and the bounds (their counts)."""
    made: list[ConnectionLimits] = []

    def limits(services_port: int) -> ConnectionLimits:
        made.append(ConnectionLimits(head_timeout, api=api, services=services, services_port=services_port))
        return made[0]

    with on_loopback(app, limits) as (api_port, services_port):
        yield api_port, services_port, made[0]


def connect(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if send:
        sock.sendall(send)
    return sock


def until_closed(sock: socket.socket, trickle: bool = False) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took; with
    `trickle`, a header line every 0.1 s meanwhile (as the tester's script, faster)."""
    start = time.monotonic()
    sock.settimeout(0.1)
    got = b""
    while time.monotonic() - start < 5:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if trickle:
                sock.sendall(b"X-a: b\r\n")
            continue
        except ConnectionResetError:
            break
        if not data:
            break
        got += data
    else:
        pytest.fail(f"the connection was still open after 5 s (got {got!r})")
    sock.close()
    return got, time.monotonic() - start


def error_of(answer: bytes) -> tuple[int, str, bytes]:
    """An answer's status, its body's `error`, and its head."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"], head


def wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, "the server's count of open connections did not settle"
        time.sleep(0.01)


@ON_SQLITE
def test_a_head_that_never_ends_is_closed_at_its_deadline_on_both_ports(app: FastAPI) -> None:
    with bounded(app, DEADLINE, api=10, services=10) as (api_port, services_port, limits):
        for port in (services_port, api_port):
            answer, took = until_closed(connect(port, HEAD), trickle=True)
            status, error, head = error_of(answer)
            assert (status, error) == (408, "invalid_input") and b"connection: close" in head
            assert DEADLINE - 0.1 <= took < DEADLINE + 2
            # A connection that sends nothing is closed as an idle one is, with nothing it could
            # take for the answer of a request it sends later.
            answer, took = until_closed(connect(port))
            assert answer == b"" and DEADLINE - 0.1 <= took < DEADLINE + 2
        wait_for(lambda: limits.open == {False: 0, True: 0})


@ON_SQLITE
def test_a_kept_alive_connection_idles_past_the_deadline_and_its_next_head_has_one(app: FastAPI) -> None:
    with bounded(app, DEADLINE, api=10, services=10) as (api_port, _, _):
        conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=5)
        for _ in range(2):
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() and conn.sock is not None
            time.sleep(DEADLINE * 2)  # idle: uvicorn's keep-alive (65 s) bounds it, not the deadline
        assert conn.sock is not None
        conn.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # the deadline runs again
        answer, took = until_closed(conn.sock)
        assert error_of(answer)[0] == 408 and DEADLINE - 0.1 <= took < DEADLINE + 2


@ON_SQLITE
def test_connections_past_a_ports_budget_are_refused_and_the_other_port_answers(app: FastAPI) -> None:
    with bounded(app, 30, api=2, services=3) as (api_port, services_port, limits):
        held = [connect(services_port, HEAD) for _ in range(3)]
        wait_for(lambda: limits.open[True] == 3)
        answer, took = until_closed(connect(services_port))
        status, error, head = error_of(answer)
        assert (status, error) == (503, "capacity_reached") and b"retry-after: 5" in head
        assert took < 15  # at once, not at the head's deadline (30 s)
        # The API's port has its own budget: a flood of the public port does not take it.
        assert httpx.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200
        held.pop().close()
        wait_for(lambda: limits.open[True] == 2)
        served = httpx.get(f"http://127.0.0.1:{services_port}/services/default/x/")
        assert served.json()["error"] != "capacity_reached"

        # And the other way: the API's port full, the services' port still answers.
        held += [connect(api_port, b"GET /healthz HTTP/1.1\r\n") for _ in range(2)]
        wait_for(lambda: limits.open[False] == 2)
        assert error_of(until_closed(connect(api_port))[0])[:2] == (503, "capacity_reached")
        served = httpx.get(f"http://127.0.0.1:{services_port}/services/default/x/")
        assert served.json()["error"] != "capacity_reached"
        for sock in held:
            sock.close()
        wait_for(lambda: limits.open == {False: 0, True: 0})


@ON_SQLITE
def test_a_websocket_gives_its_place_back_when_it_ends(app: FastAPI) -> None:
    """An upgraded connection is the WebSocket protocol's: its end is counted all the same (or
    each WebSocket ever made would hold a place for good)."""
    upgrade = (
        b"GET /services/default/x/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with bounded(app, DEADLINE, api=10, services=1) as (_, services_port, limits):
        for _ in range(3):
            answer, _took = until_closed(connect(services_port, upgrade))
            assert answer.startswith(b"HTTP/1.1 401")  # no token: refused by the proxy, after the upgrade
            wait_for(lambda: limits.open[True] == 0)


def test_the_budgets_come_from_the_open_files_limit_which_the_server_raises() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limits = ConnectionLimits.of_process(8751)
    assert (limits.most[True], limits.most[False], limits.head_timeout) == (soft // 4, soft // 8, 60)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = min(256, hard)
    raised = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource; from orch.server.main import raise_open_files; raise_open_files(); "
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])",
        ],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)),
        capture_output=True,
        text=True,
        check=True,
    )
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    assert int(raised.stdout) == want


@ON_SQLITE
def test_a_cluster_nodes_proxy_bounds_a_head_as_the_server_does(
    tmp_path: Path, fake_engine: FakeEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's proxy, on the cluster's network, had neither the deadline nor a budget."""
    monkeypatch.setattr(http_protocol, "HEAD_TIMEOUT", 0.5)
    key = base64.b64encode(b"k" * 32).decode()  # the cluster's ORCH_SECRET_KEY
    node = make_platform(tmp_path / "node", fake_engine, database_url=database_url, secret_key=key)
    proxy = NodeProxy(node, "127.0.0.1", 0)
    proxy.start()
    try:
        host, port = proxy.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: node\r\n")  # and never the rest
            started = time.monotonic()
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 8
    finally:
        proxy.stop()
        close_platform(node)
