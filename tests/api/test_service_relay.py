"""Services across machines (docs/scale.md#services-across-machines): a cluster's server relays a
request for a service to the proxy of the node that holds it, which sends it to its container;
the node's proxy takes requests from the cluster's servers only (the relay token), and nothing of
the relay reaches the service. On the fake engine, with the node's proxy on real uvicorn; the real
thing, on Ray and Podman, is tests/integration/test_cluster.py."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from orch.engine.fake import FakeEngine
from orch.server import relay
from orch.server.node_proxy import NodeProxy
from orch.services import deployed, nodes, routing
from orch.services.nodes import Joining
from orch.services.platform import Platform
from orch.store.schema import ServiceLeaseRow
from tests.api.test_nodes import node
from tests.api.test_service_cluster import deployed_on_a_node
from tests.conftest import close_platform, make_platform

KEY = base64.b64encode(b"k" * 32).decode()  # the cluster's ORCH_SECRET_KEY


def cluster_server(tmp_path: Path, engine: FakeEngine, database_url: str) -> Iterator[Platform]:
    """A cluster's server: it runs no work, and relays to nodes."""
    found = make_platform(
        tmp_path / "home", engine, database_url=database_url, cluster="127.0.0.1:6379", secret_key=KEY
    )
    assert not found.runs_work
    yield found
    close_platform(found)


@pytest.fixture
def platform(tmp_path: Path, fake_engine: FakeEngine, database_url: str) -> Iterator[Platform]:
    """The app's platform is a cluster's server."""
    yield from cluster_server(tmp_path, fake_engine, database_url)


class _Echo(BaseHTTPRequestHandler):
    """Answers with the path and every header it got."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        text = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        self.send_response(200)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The service's containers answer here (the fake engine gives them 127.0.0.1)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    monkeypatch.setattr(deployed, "PORT", server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()


@pytest.fixture
def held(api: httpx.Client, database_url: str, tmp_path: Path) -> Iterator[tuple[Platform, NodeProxy]]:
    """Service `web`, deployed by node `a`, which serves it at its proxy."""
    with deployed_on_a_node(api, database_url, tmp_path, secret_key=KEY) as a:
        proxy = NodeProxy(a, "127.0.0.1", 0)
        proxy.start()
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**33, slots=4, proxy=proxy.address)
        nodes.register(a, me)
        try:
            yield a, proxy
        finally:
            proxy.stop()


def test_the_server_relays_to_the_node_that_holds_the_service(
    platform: Platform, site: httpx.Client, held: tuple[Platform, NodeProxy], echo: None
) -> None:
    _, proxy = held
    route = routing.of(platform).lookup("team", "web")
    assert route is not None and route.backends
    assert {b.relay for b in route.backends} == {proxy.address}

    # A client's own relay headers are dropped: the server sends its own, the node drops those.
    spoofed = {"orch-relay-token": "guess", "orch-replica": "other", "X-Theirs": "1"}
    # Who asked: the server's word reaches the service through the node, after the client's own.
    claims = {"Forwarded": "for=1.1.1.1;proto=https", "X-Real-IP": "9.9.9.9"}
    resp = site.get("/services/team/web/x?y=1", headers={**spoofed, **claims})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["path"] == "/x?y=1"
    assert got["headers"]["x-forwarded-prefix"] == "/services/team/web"
    client = got["headers"]["x-forwarded-for"].split(", ")[-1]
    assert got["headers"]["x-real-ip"] == client
    assert got["headers"]["forwarded"].startswith(f"for=1.1.1.1;proto=https, for={client};proto=http;")
    assert got["headers"]["x-theirs"] == "1"
    for header in ("authorization", "orch-relay-token", "orch-replica"):
        assert header not in got["headers"]

    # The workspace's token is still checked, by the server.
    anonymous = httpx.Client(transport=site._transport, base_url=site.base_url)
    assert anonymous.get("/services/team/web/x").status_code == 401

    # The request went through the node's proxy: without it, the service is unreachable here.
    proxy.stop()
    resp = site.get("/services/team/web/x")
    assert resp.status_code == 503 and "did not answer" in resp.json()["message"]


def test_a_node_s_proxy_takes_requests_of_the_cluster_s_servers_only(
    held: tuple[Platform, NodeProxy], workspace: tuple[str, str], echo: None
) -> None:
    a, proxy = held
    url = f"http://{proxy.address}/services/team/web/x"
    with httpx.Client(trust_env=False, timeout=10) as client:
        refused = client.get(url)
        assert refused.status_code == 401
        assert "cluster's servers only" in refused.json()["message"]
        # A workspace's token opens nothing here, nor a wrong relay token.
        assert client.get(url, headers={"Authorization": f"Bearer {workspace[1]}"}).status_code == 401
        assert client.get(url, headers={"orch-relay-token": "0" * 64}).status_code == 401

        token = {"orch-relay-token": relay.token(a.config)}
        resp = client.get(url, headers=token)
        assert resp.status_code == 200 and resp.json()["path"] == "/x"
        assert client.get(f"http://{proxy.address}/services/team/nothing/", headers=token).status_code == 404
        assert client.get(f"http://{proxy.address}/v1/runs", headers=token).status_code == 404


def test_websockets_pass_through_the_server_and_the_node(
    platform: Platform,
    held: tuple[Platform, NodeProxy],
    workspace: tuple[str, str],
    live: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from websockets.sync.client import connect
    from websockets.sync.server import ServerConnection, serve

    seen: dict[str, object] = {}

    def shout(conn: ServerConnection) -> None:
        seen.update(path=conn.request.path, headers=dict(conn.request.headers.raw_items()))  # type: ignore[union-attr]
        for message in conn:
            conn.send(str(message).upper())

    server = serve(shout, "127.0.0.1", 0)
    monkeypatch.setattr(deployed, "PORT", server.socket.getsockname()[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = live.replace("http://", "ws://") + "/services/team/web/socket?x=1"
        with connect(url, proxy=None, additional_headers={"Authorization": f"Bearer {workspace[1]}"}) as ws:
            ws.send("hello")
            assert ws.recv(5) == "HELLO"
    finally:
        server.shutdown()
        thread.join(5)
    assert seen["path"] == "/socket?x=1"
    headers = {k.lower(): v for k, v in seen["headers"].items()}  # type: ignore[attr-defined]
    assert not headers.keys() & {"authorization", "orch-relay-token", "orch-replica"}
    # The handshake is an HTTP request: its scheme is http (nginx's $scheme), never ws.
    assert headers["x-forwarded-proto"] == "http"
    assert ";proto=http;" in headers["forwarded"]


def test_the_relay_follows_the_service_s_lease(
    platform: Platform, held: tuple[Platform, NodeProxy], database_url: str, tmp_path: Path
) -> None:
    """The holder's own proxy reaches its containers itself; when the lease moves to another
    node, a server's route goes to that node's proxy from its next read."""
    a, _ = held
    own = routing.of(a).lookup("team", "web")
    assert own is not None and own.backends and {b.relay for b in own.backends} == {None}
    with node(tmp_path, database_url, "b") as b:
        me = Joining(id="b", address="127.0.0.1", cpus=2, memory=2**33, slots=4, proxy="127.0.0.1:9")
        nodes.register(b, me)
        with platform.store.session() as s:
            s.execute(update(ServiceLeaseRow).values(holder=b.instance))
        routes = routing.of(platform)
        routes.changed()
        moved = routes.lookup("team", "web")
        assert moved is not None and {x.relay for x in moved.backends} == {"127.0.0.1:9"}
