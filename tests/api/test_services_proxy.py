"""The services' proxy in-process, in front of small local servers standing in for services:
public and private services, what passes each way, event streams, WebSockets, drains."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from orch.server import proxy_client
from orch.services import deployed as use_cases
from orch.services import routing
from orch.services.platform import Platform
from tests.api.test_services import bundle, deploy, work


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


class _Service(BaseHTTPRequestHandler):
    """Echoes what it got; sets a cookie of its own and tries to set orch's; /events streams."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/events"):
            self._events()
            return
        if self.path.startswith("/headers"):  # every header as it came
            self._send(json.dumps(self.headers.items()).encode())
            return
        text = json.dumps(
            {
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "cookie": self.headers.get("Cookie"),
                "prefix": self.headers.get("X-Forwarded-Prefix"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Set-Cookie", "orch_token=stolen; Path=/")
        # Both would act on the whole host, so on orch's own origin too (its cookie, its HSTS).
        self.send_header("Clear-Site-Data", '"cookies", "storage"')
        self.send_header("Strict-Transport-Security", "max-age=0")
        self.send_header("Service-Worker-Allowed", "/")
        self.end_headers()
        self.wfile.write(text)

    def _send(self, text: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_POST(self) -> None:
        # http.server answers a request's "Expect: 100-continue" with an interim 100 first.
        size = int(self.headers.get("Content-Length") or 0)
        text = json.dumps({"path": self.path, "got": self.rfile.read(size).decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def _events(self) -> None:
        """One event, then a wait for the test's go, then another."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n in (1, 2):
            if n == 2:
                GO.wait(10)
            data = f"data: event {n}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        if self.path == "/events/forever":
            STOPPED.wait(10)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


GO = threading.Event()
STOPPED = threading.Event()


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    GO.clear()
    STOPPED.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    server.daemon_threads = True
    monkeypatch.setattr(use_cases, "PORT", server.server_address[1])  # where the proxy sends it
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    GO.set()
    STOPPED.set()
    server.shutdown()
    server.server_close()


def anonymous(site: httpx.Client) -> httpx.Client:
    """A client of the services' origin without a token."""
    return httpx.Client(transport=site._transport, base_url=site.base_url)


def deployed(
    api: httpx.Client, platform: Platform, tmp_path: Path, files: dict[str, str], **params: str
) -> dict:
    resp = api.post(
        "/v1/services/web/deploy",
        params=params,
        content=bundle(tmp_path, files, f"b{time.monotonic_ns()}"),
        headers={"Content-Type": "application/gzip"},
    )
    assert resp.status_code == 201, resp.text
    work(platform)
    return api.get("/v1/services/web").json()


def test_a_private_service_needs_its_workspaces_token_and_never_sees_it(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, service: None
) -> None:
    svc = deployed(api, platform, tmp_path, {"main.py": ""})
    assert svc["public"] is False and svc["deployment"]["public"] is False
    assert anonymous(site).get("/services/team/web/").status_code == 401
    resp = site.get("/services/team/web/x", headers={"Cookie": "orch_token=t; theirs=1"})
    assert resp.status_code == 200
    assert resp.json() == {"path": "/x", "auth": None, "cookie": "theirs=1", "prefix": "/services/team/web"}
    # The service's own cookie reaches the client; orch's cookie it cannot set, nor clear.
    assert resp.headers.get_list("set-cookie") == ["session=abc; Path=/"]
    assert "clear-site-data" not in resp.headers and "strict-transport-security" not in resp.headers
    # Nor can its service worker take the other services' paths (they share its origin).
    assert "service-worker-allowed" not in resp.headers


def test_public_by_flag_answers_anyone_and_carries_nothing_of_orchs(
    api: httpx.Client,
    site: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    service: None,
    workspace: tuple[str, str],
) -> None:
    svc = deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    assert svc["public"] is True and svc["deployment"]["public"] is True
    anyone = anonymous(site)
    resp = anyone.get("/services/team/web/hook?a=1")
    assert resp.status_code == 200 and resp.json()["path"] == "/hook?a=1"
    assert resp.headers.get_list("set-cookie") == ["session=abc; Path=/"]
    # An orch token sent along (header or cookie) is not passed on; the service's own credentials are.
    sent = anyone.get(
        "/services/team/web/",
        headers={"Authorization": f"Bearer {workspace[1]}", "Cookie": f"orch_token={workspace[1]}"},
    ).json()
    assert (sent["auth"], sent["cookie"]) == (None, None), sent
    basic = anyone.get("/services/team/web/", headers={"Authorization": "Basic dTpw"}).json()
    assert basic["auth"] == "Basic dTpw"
    # A token of no workspace, or a bad one, does not matter to a public service.
    assert anyone.get("/services/team/web/", headers={"Authorization": "Bearer nope"}).status_code == 200
    # Another name in the workspace, or the workspace of another, is still not found (401 without a token).
    assert anyone.get("/services/team/other/").status_code == 401
    assert anyone.get("/services/other/web/").status_code == 401
    listed = api.get("/v1/services").json()
    assert [s["public"] for s in listed] == [True]
    page = api.get("/ui/services/web", headers={"Cookie": f"orch_token={workspace[1]}"}).text
    assert "public: anyone with the URL" in page


def test_no_form_of_an_orch_token_reaches_a_public_service_the_services_own_credentials_do(
    api: httpx.Client,
    site: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    service: None,
    workspace: tuple[str, str],
) -> None:
    """Found by a tester: `Bearer  orch_...` (two spaces) was the caller's token to the API and
    the proxy, yet reached another workspace's public service; the proxy tested one spelling."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    token = workspace[1]
    anyone = anonymous(site)
    basic = base64.b64encode(f"me:{token}".encode()).decode()
    forms = [
        {"Authorization": f"Bearer  {token}"},
        {"Authorization": f"Bearer\t{token}"},
        {"Authorization": f"BEARER {token}  "},
        {"Authorization": token},
        {"Authorization": f"Token {token}"},
        {"Authorization": f"Basic {basic}"},
        {"X-Orch-Token": token},
        {"Cookie": f"orch_token ={token}"},
        {"Cookie": f'orch_token="{token}"'},
        {"Cookie": f"theirs={token}"},
    ]
    for headers in forms:
        seen = anyone.get("/services/team/web/headers", headers=headers).json()
        assert not [v for _, v in seen if token in v or "orch_" in v], (headers, seen)
    # What the API and a private service take as the token is what the proxy keeps back (one reading).
    for spelling in (f"Bearer  {token}", f"Bearer\t{token}", f"bearer {token} "):
        assert api.get("/v1/secrets", headers={"Authorization": spelling}).status_code == 200, spelling
    # The service's own credentials, and its own cookies beside orch's, still pass.
    own = [
        ({"Authorization": "Basic dTpw"}, ("authorization", "Basic dTpw")),
        ({"Authorization": "Bearer hook-secret"}, ("authorization", "Bearer hook-secret")),
        ({"Authorization": "Bearer my_orch_secret"}, ("authorization", "Bearer my_orch_secret")),
        ({"Cookie": f"orch_token ={token}; mine=1"}, ("cookie", "mine=1")),
        ({"X-Api-Key": "k1"}, ("x-api-key", "k1")),
    ]
    for headers, wanted in own:
        seen = anyone.get("/services/team/web/headers", headers=headers).json()
        assert wanted in [(k.lower(), v) for k, v in seen], (headers, seen)


def test_a_private_service_takes_the_token_as_the_api_does(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, service: None
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""})
    token = site.headers["Authorization"].split(" ", 1)[1]
    anyone = anonymous(site)
    for spelling in (f"Bearer  {token}", f"Bearer\t{token}"):
        resp = anyone.get("/services/team/web/headers", headers={"Authorization": spelling})
        assert resp.status_code == 200 and "authorization" not in [k.lower() for k, _ in resp.json()]
    # Another scheme is not the token, there as at the API.
    basic = base64.b64encode(f"me:{token}".encode()).decode()
    assert anyone.get("/services/team/web/", headers={"Authorization": f"Basic {basic}"}).status_code == 401
    assert api.get("/v1/secrets", headers={"Authorization": f"Basic {basic}"}).status_code == 401


def test_on_the_services_origin_the_ui_cookie_opens_nothing_and_the_api_is_not_there(
    api: httpx.Client,
    site: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    service: None,
    workspace: tuple[str, str],
) -> None:
    """A browser sends the web UI's cookie to the services' port too (cookies do not tell ports
    apart): a public service's page must not open private services, or the API, with it."""
    deployed(api, platform, tmp_path, {"main.py": ""})
    signed_in = {"Cookie": f"orch_token={workspace[1]}"}
    assert anonymous(site).get("/services/team/web/", headers=signed_in).status_code == 401
    for path in ("/v1/services", "/ui/settings", "/healthz", "/"):
        resp = anonymous(site).get(path, headers=signed_in)
        assert resp.status_code == 404, path
        assert "serves orch's services only" in resp.json()["message"]
    # The old address on the API's origin sends callers to the services' origin, as it was asked.
    moved = api.post("/services/team/web/a%2Fb?x=1", content=b"payload")
    assert moved.status_code == 308
    assert moved.headers["location"] == "http://localhost:8751/services/team/web/a%2Fb?x=1"
    assert api.get("/v1/services/web").json()["url"] == "http://localhost:8751/services/team/web/"


def test_public_by_manifest_then_private_again_at_the_next_deploy(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, service: None
) -> None:
    deployed(api, platform, tmp_path, {"main.py": "", "orch.yaml": "public: true\n"})
    assert anonymous(site).get("/services/team/web/").status_code == 200
    svc = deployed(api, platform, tmp_path, {"main.py": "# v2\n"})
    assert svc["version"] == 2 and svc["public"] is False
    assert anonymous(site).get("/services/team/web/").status_code == 401


def test_a_bad_public_value_is_refused_with_the_fix(api: httpx.Client, tmp_path: Path) -> None:
    resp = deploy(api, "web", bundle(tmp_path, {"main.py": "", "orch.yaml": "public: yes please\n"}))
    assert resp.status_code == 400
    body = resp.json()
    assert "public: 'yes please' is not true or false." in body["message"]
    assert body["fix"] == "Write public: true or public: false."
    assert api.get("/v1/services").json() == []


def test_event_streams_reach_the_client_as_they_are_written(
    api: httpx.Client, platform: Platform, tmp_path: Path, service: None, live: str
) -> None:
    """The first event arrives while the service still waits to write the second."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    with httpx.stream("GET", f"{live}/services/team/web/events") as resp:
        assert resp.headers["content-type"] == "text/event-stream"
        chunks = resp.iter_text()
        assert next(chunks) == "data: event 1\n\n"
        assert not GO.is_set()  # the second event is not written yet
        GO.set()
        assert "".join(chunks) == "data: event 2\n\n"


def test_a_redeploy_ends_event_streams_cleanly_and_counts_them(
    api: httpx.Client, platform: Platform, tmp_path: Path, service: None, live: str
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    GO.set()
    metrics = api.get("/metrics").text
    assert 'orch_proxy_open_connections{kind="stream"} 0.0' in metrics
    got: list[str] = []

    def follow() -> None:
        with httpx.stream("GET", f"{live}/services/team/web/events/forever") as resp:
            got.extend(resp.iter_text())  # ends without an error when the proxy ends the stream

    t = threading.Thread(target=follow)
    t.start()
    deadline = time.monotonic() + 5
    while routing.of(platform).open_connections() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert routing.of(platform).open_connections() == 1
    assert 'orch_proxy_open_connections{kind="stream"} 1.0' in api.get("/metrics").text
    started = time.monotonic()
    deployed(api, platform, tmp_path, {"main.py": "# v2\n"}, public="true")
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < 5
    assert "".join(got) == "data: event 1\n\ndata: event 2\n\n"
    assert routing.of(platform).open_connections() == 0


SEEN: dict[str, object] = {}


def _ws_handler(conn: object) -> None:
    """Echoes each message back, upper-cased if text; "close" makes it close with 4000."""
    from websockets.exceptions import ConnectionClosed

    SEEN.update(
        path=conn.request.path,  # type: ignore[attr-defined]
        auth=conn.request.headers.get("Authorization"),  # type: ignore[attr-defined]
        cookie=conn.request.headers.get("Cookie"),  # type: ignore[attr-defined]
        subprotocol=conn.subprotocol,  # type: ignore[attr-defined]
        offered=conn.request.headers.get("Sec-WebSocket-Protocol"),  # type: ignore[attr-defined]
    )
    try:
        for message in conn:  # type: ignore[attr-defined]
            if message == "close":
                conn.close(4000, "asked to")  # type: ignore[attr-defined]
                return
            conn.send(message.upper() if isinstance(message, str) else message[::-1])  # type: ignore[attr-defined]
    except ConnectionClosed:
        pass


@pytest.fixture
def ws_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from websockets.sync.server import serve

    SEEN.clear()

    def chat(conn: object, offered: list[str]) -> str | None:
        return "chat.v1" if "chat.v1" in offered else None

    server = serve(_ws_handler, "127.0.0.1", 0, select_subprotocol=chat)
    monkeypatch.setattr(use_cases, "PORT", server.socket.getsockname()[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    thread.join(5)


def ws_url(live: str, path: str) -> str:
    return live.replace("http://", "ws://") + path


def test_websockets_go_both_ways_with_the_token_rule(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    ws_service: None,
    live: str,
    workspace: tuple[str, str],
) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    deployed(api, platform, tmp_path, {"main.py": ""})
    url = ws_url(live, "/services/team/web/socket?x=1")
    with pytest.raises(InvalidStatus) as refused:
        connect(url, proxy=None)
    assert refused.value.response.status_code == 401
    assert b"no API token" in refused.value.response.body
    token = {"Authorization": f"Bearer {workspace[1]}", "Cookie": "orch_token=x; mine=1"}
    # A page's WebSocket can't send Authorization: its token may come as a subprotocol, which
    # must not reach the service either.
    offered = ["chat.v1", workspace[1]]
    with connect(url, proxy=None, additional_headers=token, subprotocols=offered) as ws:
        assert ws.subprotocol == "chat.v1"
        ws.send("hello")
        assert ws.recv(5) == "HELLO"
        ws.send(b"\x01\x02\x03")
        assert ws.recv(5) == b"\x03\x02\x01"
        assert 'orch_proxy_open_connections{kind="websocket"} 1.0' in api.get("/metrics").text
        ws.send("close")
        with pytest.raises(ConnectionClosed):
            ws.recv(5)
    assert (ws.close_code, ws.close_reason) == (4000, "asked to")
    assert SEEN == {
        "path": "/socket?x=1",
        "auth": None,
        "cookie": "mine=1",
        "subprotocol": "chat.v1",
        "offered": "chat.v1",
    }
    deadline = time.monotonic() + 5
    while routing.of(platform).open_connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 'orch_proxy_open_connections{kind="websocket"} 0.0' in api.get("/metrics").text


@contextlib.contextmanager
def listening(monkeypatch: pytest.MonkeyPatch, handle: Callable[[socket.socket], None]) -> Iterator[None]:
    """A fake service on a loopback port the proxy sends to (its PORT): each connection it
    accepts is handed to `handle` (in this thread, which handles one at a time, or started in a
    thread of its own by `handle`); stopped and closed on the way out."""
    listener = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setattr(use_cases, "PORT", listener.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            if stop.is_set():
                conn.close()
                return
            handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        socket.create_connection(listener.getsockname(), timeout=5).close()  # wakes its accept
        thread.join(5)
        listener.close()


@pytest.fixture
def raw_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """A service that reads a request's head and answers the bytes the test put in the list."""
    answer: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        with conn:
            got = b""
            while b"\r\n\r\n" not in got and (chunk := conn.recv(4096)):
                got += chunk
            conn.sendall(answer[0])

    with listening(monkeypatch, handle):
        yield answer


def test_a_service_that_answers_a_websocket_in_http_1_0_has_its_answer_passed_back(
    api: httpx.Client, platform: Platform, tmp_path: Path, raw_service: list[bytes], live: str
) -> None:
    """Found by a tester: python's http.server (the README's example service) answers HTTP/1.0,
    which the WebSocket library refused: a 500 in text and a traceback in the server's log."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    url = ws_url(live, "/services/team/web/")
    raw_service.append(b"HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6\r\nX-Mine: 1\r\n\r\nhello, not a socket")
    with pytest.raises(InvalidStatus) as answered:
        connect(url, proxy=None, open_timeout=10)
    got = answered.value.response
    assert (got.status_code, got.body, got.headers["x-mine"]) == (200, b"hello, not a socket", "1")
    # With a length, and refusing it in so many words.
    raw_service[0] = b"HTTP/1.0 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno"
    with pytest.raises(InvalidStatus) as answered:
        connect(url, proxy=None, open_timeout=10)
    assert (answered.value.response.status_code, answered.value.response.body) == (426, b"no")
    # What is no HTTP answer at all is orch's 503, in a sentence.
    for nonsense in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.0", b""):
        raw_service[0] = nonsense
        with pytest.raises(InvalidStatus) as refused:
            connect(url, proxy=None, open_timeout=10)
        assert refused.value.response.status_code == 503, nonsense
        body = json.loads(refused.value.response.body)
        assert body["error"] == "service_unavailable" and "did not take the WebSocket" in body["message"]


def test_a_redeploy_or_a_stop_closes_websockets_cleanly(
    api: httpx.Client, platform: Platform, tmp_path: Path, ws_service: None, live: str
) -> None:
    from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
    from websockets.sync.client import connect

    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    url = ws_url(live, "/services/team/web/")
    with connect(url, proxy=None) as ws:  # public: no token
        ws.send("a")
        assert ws.recv(5) == "A"
        deployed(api, platform, tmp_path, {"main.py": "# v2\n"}, public="true")
        with pytest.raises(ConnectionClosed):  # a close frame (1012 is not "OK" to websockets)
            ws.recv(5)
    assert (ws.close_code, ws.close_reason) == (routing.RESTARTING, "web v2 replaces it")
    with connect(url, proxy=None) as ws:
        ws.send("b")
        assert ws.recv(5) == "B"
        assert api.post("/v1/services/web/stop").json()["state"] == "stopped"
        with pytest.raises(ConnectionClosedOK):
            ws.recv(5)
    assert (ws.close_code, ws.close_reason) == (routing.GOING_AWAY, "the service was stopped")


def test_an_interim_answer_is_never_taken_for_the_answer_nor_left_for_the_next_caller(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, service: None
) -> None:
    # Once, the service's 100 Continue went back as the answer, and its real answer stayed on the
    # kept-alive connection: the next caller got it, and each later one the one before's.
    deployed(api, platform, tmp_path, {"main.py": ""})
    for n in range(3):
        sent = site.post(
            f"/services/team/web/upload?n={n}", content=b"attacker", headers={"Expect": "100-continue"}
        )
        assert sent.status_code == 200 and sent.json() == {"path": f"/upload?n={n}", "got": "attacker"}
        mine = site.get(f"/services/team/web/echo?user=victim{n}")
        assert mine.status_code == 200 and mine.json()["path"] == f"/echo?user=victim{n}"


def test_a_service_that_refuses_connections_is_skipped_until_its_route_changes(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""})
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection is refused
        monkeypatch.setattr(use_cases, "PORT", closed.getsockname()[1])
        refused_then_skipped(site, platform)


def refused_then_skipped(site: httpx.Client, platform: Platform) -> None:
    first = site.get("/services/team/web/")
    assert first.status_code == 503 and "the connection was refused" in first.json()["message"]
    # The next requests do not try the vanished process again (each would wait out a connect
    # timeout once its address is gone), until the supervisor changes the route.
    again = site.get("/services/team/web/")
    assert again.status_code == 503 and "is not answering: its process stopped" in again.json()["message"]
    routing.of(platform).changed()
    assert "the connection was refused" in site.get("/services/team/web/").json()["message"]


def test_an_answer_through_the_served_proxy_has_one_date_and_the_services_own_server_header(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    service: None,
    live: str,
    workspace: tuple[str, str],
) -> None:
    deployed(api, platform, tmp_path, {"main.py": ""})
    resp = httpx.get(f"{live}/services/team/web/x", headers={"Authorization": f"Bearer {workspace[1]}"})
    assert resp.status_code == 200
    assert len(resp.headers.get_list("date")) == 1  # uvicorn's; the service's went
    [server] = resp.headers.get_list("server")  # the service's own; uvicorn names itself nowhere
    assert server.startswith("BaseHTTP/")


def test_a_caller_who_leaves_a_hung_service_frees_the_proxys_connection_to_it(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    live: str,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proxy held its connection to a service that never answers for 300 s (its read timeout)
    after the caller had gone: callers who retry piled them up. Now it closes it when they go."""
    monkeypatch.setattr(proxy_client, "WATCH_AFTER", 0.05)
    deployed(api, platform, tmp_path, {"main.py": ""})
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        monkeypatch.setattr(use_cases, "PORT", hung.getsockname()[1])
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(
                f"{live}/services/team/web/slow",
                headers={"Authorization": f"Bearer {workspace[1]}"},
                timeout=httpx.Timeout(5, read=0.3),
            )
        conn, _ = hung.accept()
        with conn:
            conn.settimeout(10)
            got = b""
            while chunk := conn.recv(65536):  # until the proxy closes it: b"" (a timeout fails)
                got += chunk
            assert got.startswith(b"GET /slow HTTP/1.1")
    counted = 'orch_proxy_requests_total{code="4xx"} 1.0'  # nginx's 499: the client left
    deadline = time.monotonic() + 5
    while counted not in api.get("/metrics").text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counted in api.get("/metrics").text


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n",  # a download that stalls
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",  # a long poll
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["length", "chunked", "events"],
)
def test_a_caller_who_leaves_while_a_silent_service_s_answer_streams_frees_the_connection_to_it(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    live: str,
    monkeypatch: pytest.MonkeyPatch,
    head: bytes,
) -> None:
    """A service that sent its answer's head and part of its body, then waits. Found by a
    tester: the proxy saw its caller leave only at the service's next write, so it held its
    connection to the service (and a file descriptor) until then or its 300 s timeout: 50
    callers who gave up left 52 connections open. A body of a known length was not watched at
    all."""
    deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    part = b"x" * 1000 if b"Content-Length" in head else b"3e8\r\n" + b"x" * 1000 + b"\r\n"
    with socket.create_server(("127.0.0.1", 0)) as silent:
        monkeypatch.setattr(use_cases, "PORT", silent.getsockname()[1])
        host, port = live.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as caller:
            caller.sendall(f"GET /services/team/web/big HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            silent.settimeout(10)
            conn, _ = silent.accept()
            with conn:
                got = b""
                while b"\r\n\r\n" not in got and (chunk := conn.recv(4096)):
                    got += chunk
                conn.sendall(head + part)
                read = b""
                while b"x" * 1000 not in read and (chunk := caller.recv(65536)):
                    read += chunk
                assert read.startswith(b"HTTP/1.1 200")
                caller.close()  # the caller goes, the service says nothing more
                conn.settimeout(5)
                with contextlib.suppress(ConnectionResetError):
                    assert conn.recv(65536) == b"", "the proxy wrote to the service"
    # A timeout above: the proxy kept its connection to the service.


def test_a_drained_replica_s_503_says_the_platform_s_reason_not_a_stopped_process(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, service: None
) -> None:
    """Before, a request while the only replica was drained (a restart) heard "its process
    stopped": the service's fault, for the platform's own stop."""
    svc = deployed(api, platform, tmp_path, {"main.py": ""})
    routes = routing.of(platform)
    end = routes.begin(svc["container"])  # a request in flight: the drain waits for it
    drain = threading.Thread(
        target=routes.drain, args=([svc["container"]], 1012, "the service is restarting")
    )
    drain.start()
    try:
        deadline = time.monotonic() + 5
        while site.get("/services/team/web/").status_code == 200:
            assert time.monotonic() < deadline
        answer = site.get("/services/team/web/")
        assert answer.status_code == 503
        assert (
            answer.json()["message"]
            == "The service web is not answering for a moment: the service is restarting."
        )
    finally:
        end()
        drain.join(5)


def test_routes_of_services_that_do_not_exist_are_bounded(
    api: httpx.Client, site: httpx.Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone, without a token, may ask for any name: each miss was kept (and never dropped
    until a service changed), so random names grew the server's memory without bound."""
    monkeypatch.setattr(routing, "_MAX_ROUTES", 50)
    routes = routing.of(platform)
    read: list[str] = []
    real = routing._read
    monkeypatch.setattr(routing, "_read", lambda p, ws, name: read.append(name) or real(p, ws, name))
    for i in range(200):
        assert anonymous(site).get(f"/services/w{i}/n{i}/").status_code == 401
        assert len(routes._routes) <= 50
    assert len(read) == 200
    # A name no service can have (longer than 63 characters) is neither looked up nor kept.
    routes.changed()
    assert anonymous(site).get(f"/services/team/{'n' * 20000}/").status_code == 401
    assert routes.lookup("team", "n" * 64) is None and routes.lookup("w" * 64, "web") is None
    assert len(read) == 200 and routes._routes == {}
