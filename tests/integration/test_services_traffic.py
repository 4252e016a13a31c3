"""What passes through the services' proxy, on a real server and real Podman: public and private
services, event streams as they are written, WebSockets both ways, their clean end at a redeploy."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.integration.conftest import Server
from tests.integration.test_runs import write
from tests.integration.test_services import deploy, fetch, status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Standard library only: HTTP, an event stream whose second event waits for GET /go, and a
# WebSocket echo (RFC 6455 by hand: the handshake, masked frames in, plain frames out).
TRAFFIC_SERVICE = r"""
import base64, hashlib, json, os, struct, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v1"
GO = threading.Event()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path == "/events":
            return self.events()
        if self.path == "/go":
            GO.set()
        body = json.dumps({"version": VERSION, "path": self.path,
                           "auth": self.headers.get("Authorization"),
                           "cookie": self.headers.get("Cookie")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "orch_token=from-the-service; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def events(self):
        GO.clear()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n in (1, 2):
            if n == 2:
                GO.wait(60)
            data = f"data: event {n}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:  # close: answer it, then the connection ends
                self.wfile.write(bytes([0x88, len(data[:2])]) + data[:2])
                self.wfile.flush()
                return
            if opcode == 9:  # ping
                self.wfile.write(bytes([0x8A, len(data)]) + data)
            elif opcode == 1:
                reply = f"{VERSION} {data.decode().upper()}".encode()
                self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()

    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def ws_url(server: Server, path: str) -> str:
    return server.services_url.replace("http://", "ws://") + path


def test_a_public_service_answers_anyone_and_gets_nothing_of_orchs(server: Server, tmp_path: Path) -> None:
    app = write(tmp_path / "hook", {"main.py": TRAFFIC_SERVICE})
    res = deploy(server, app, "--name", "hook", "--public")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "public" in res.stderr
    info = status(server, "hook")
    assert info["public"] is True
    assert "public" in server.cli("service", "status", "hook").stdout
    assert "public" in server.cli("service", "list").stdout
    # No token needed; a token or the UI's cookie sent along never reaches the service, and the
    # service cannot set orch's cookie.
    resp = httpx.get(
        info["url"] + "in?x=1",
        headers={"Authorization": f"Bearer {server.token}", "Cookie": f"orch_token={server.token}; a=1"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"version": "v1", "path": "/in?x=1", "auth": None, "cookie": "a=1"}
    assert "set-cookie" not in resp.headers
    # Private again at a deploy without --public (each deployment says which it is).
    write(app, {"main.py": TRAFFIC_SERVICE.replace('VERSION = "v1"', 'VERSION = "v2"')})
    assert deploy(server, app, "--name", "hook").returncode == 0
    assert status(server, "hook")["public"] is False
    assert httpx.get(info["url"]).status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, "/services/default/hook/"), proxy=None, open_timeout=10)
    assert refused.value.response.status_code == 401


def test_an_event_stream_arrives_as_the_service_writes_it(server: Server, tmp_path: Path) -> None:
    app = write(tmp_path / "sse", {"main.py": TRAFFIC_SERVICE})
    assert deploy(server, app, "--name", "sse").returncode == 0
    fetch(server, "sse")
    with (
        server.services() as site,
        site.stream("GET", "/services/default/sse/events") as resp,
    ):
        assert resp.headers["content-type"] == "text/event-stream"
        chunks = resp.iter_text()
        assert next(chunks) == "data: event 1\n\n"  # while the service waits to write the second
        assert site.get("/services/default/sse/go").status_code == 200
        assert next(chunks) == "data: event 2\n\n"


def test_websockets_both_ways_and_closed_cleanly_at_a_redeploy(server: Server, tmp_path: Path) -> None:
    app = write(tmp_path / "ws", {"main.py": TRAFFIC_SERVICE})
    assert deploy(server, app, "--name", "ws").returncode == 0
    url = ws_url(server, "/services/default/ws/socket")
    auth = {"Authorization": f"Bearer {server.token}"}
    with connect(url, proxy=None, additional_headers=auth, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(10) == "v1 HELLO"
        metrics = httpx.get(server.url + "/metrics").text
        assert 'orch_proxy_open_connections{kind="websocket"} 1.0' in metrics
        write(app, {"main.py": TRAFFIC_SERVICE.replace('VERSION = "v1"', 'VERSION = "v2"')})
        redeploy = threading.Thread(target=deploy, args=(server, app, "--name", "ws"))
        redeploy.start()
        answers = []
        try:
            while True:  # answers from v1 until the switch, then a close frame
                ws.send("again")
                answers.append(ws.recv(30))
                time.sleep(0.1)
        except ConnectionClosed:
            pass
        redeploy.join(300)
    assert set(answers) == {"v1 AGAIN"}
    assert ws.close_code == 1012 and ws.close_reason == "ws v2 replaces it"
    assert status(server, "ws")["version"] == 2
    with connect(url, proxy=None, additional_headers=auth, open_timeout=10) as ws:
        ws.send("back")
        assert ws.recv(10) == "v2 BACK"
    deadline = time.monotonic() + 10
    closed = 'orch_proxy_open_connections{kind="websocket"} 0.0'
    while closed not in httpx.get(server.url + "/metrics").text:
        assert time.monotonic() < deadline, "the WebSocket is still counted as open"
        time.sleep(0.1)
    # One container is left: the old one went after the WebSocket was closed.
    out = subprocess.run(
        ["podman", "ps", "-q", "--filter", f"label=org.orch.instance={server.instance}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(out) == 1
    assert json.loads(server.cli("service", "list", "--json").stdout)[0]["public"] is False
