"""Services on a cluster, on the fake engine (SQLite and PostgreSQL): the cluster's server runs
no work, so its stop, restart and delete change rows and drain its proxy, and the node that
holds the service acts on them at its supervisor's next pass, on its own engine; what the node's
containers print is in the store, so the server answers for it. The real thing, on Ray and
Podman, is tests/integration/test_cluster.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services import deployed, deployed_logs, leases, routing
from orch.services.platform import Platform
from orch.services.reconcile import reconcile
from orch.workers import deploys
from tests.api.test_nodes import node
from tests.api.test_services import bundle, deploy
from tests.conftest import close_platform, make_platform


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[tuple[Platform, FakeEngine]]:
    """A cluster's server (ORCH_CLUSTER set) on the store, with an engine of its own."""
    engine = FakeEngine()
    found = make_platform(tmp_path / "server", engine, database_url=database_url, cluster="127.0.0.1:6379")
    assert not found.runs_work
    yield found, engine
    close_platform(found)


@contextmanager
def deployed_on_a_node(
    api: httpx.Client, database_url: str, tmp_path: Path, **settings: object
) -> Iterator[Platform]:
    """Service `web` deployed through the API and by node `a` (which then holds it)."""
    assert deploy(api, "web", bundle(tmp_path, {"main.py": ""}, "web")).status_code == 201
    with node(tmp_path, database_url, "a", **settings) as a:
        a.probe = lambda address, port: True
        dep = deploys.claim(a)
        assert dep is not None
        deploys.execute(a, dep)
        yield a


class _Clock:
    """time for routing, with a monotonic clock that the test moves `ahead`."""

    def __init__(self) -> None:
        self.ahead = 0.0
        self.sleep = time.sleep

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


def write_log(node: Platform, service_id: str, container: str, *lines: str) -> None:
    with deployed_logs.container_log(node, service_id, container).open("a") as f:
        f.writelines(f"2026-01-01T00:00:00Z stdout F {text}\n" for text in lines)


def test_the_node_acts_on_what_the_cluster_s_server_asks(
    api: httpx.Client,
    server: tuple[Platform, FakeEngine],
    workspace: tuple[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    srv, srv_engine = server
    ws = workspace[0]
    with deployed_on_a_node(api, database_url, tmp_path) as a:
        engine = a.engine
        assert isinstance(engine, FakeEngine)
        first = deployed.show(srv, ws, "web")
        assert first.state == "running" and first.container in engine.detached
        assert leases.holder(a, first.id) == a.instance and first.node == "a"
        write_log(a, first.id, first.container, "listening")
        reconcile(a)
        assert deployed._logs(srv, ws, "web", 0).text == "listening\n"  # from the store

        # Restart: the server drops the replica; the node replaces its container, the old
        # one's last output stored first.
        write_log(a, first.id, first.container, "last words")
        deployed.restart(srv, ws, "web")
        assert srv_engine.detached == {} and first.container in engine.detached
        reconcile(a)
        second = deployed.show(srv, ws, "web")
        assert second.state == "running" and second.container != first.container
        assert set(engine.detached) == {second.container}
        assert deployed._logs(srv, ws, "web", 0).text == "listening\nlast words\n"

        # Stop, then delete: the node removes the container, then the service's images.
        deployed.stop(srv, ws, "web")
        assert set(engine.detached) == {second.container}
        reconcile(a)
        assert engine.detached == {} and deployed.show(srv, ws, "web").state == "stopped"
        deployed.restart(srv, ws, "web")
        reconcile(a)
        assert len(engine.detached) == 1
        assert engine.images({"org.orch.service": first.id})
        deployed.delete_service(srv, ws, "web")
        reconcile(a)
        assert engine.detached == {} and not engine.images({"org.orch.service": first.id})
        assert srv_engine.detached == {}


def test_the_cluster_s_proxy_follows_what_a_node_changed(
    api: httpx.Client,
    server: tuple[Platform, FakeEngine],
    workspace: tuple[str, str],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's proxy keeps a route for ROUTE_SECONDS at most: a replica that crashed on its
    node (no change the server made, so nothing told its routes) is out of them after that."""
    clock = _Clock()
    monkeypatch.setattr(routing, "time", clock)  # routing's clock only: no timing to miss
    srv, _ = server
    with deployed_on_a_node(api, database_url, tmp_path) as a:
        container = deployed.show(srv, workspace[0], "web").container
        routes = routing.of(srv)
        first = routes.lookup("team", "web")
        assert first is not None and [b.container for b in first.backends] == [container]
        assert isinstance(a.engine, FakeEngine)
        a.engine.exit_container(str(container), 1)
        reconcile(a)  # the node sees the crash: the replica restarts after its backoff
        assert routes.cached("team", "web") == (True, first)  # still trusted, for a moment
        clock.ahead += routing.ROUTE_SECONDS + 0.1
        assert routes.cached("team", "web") == (False, None)
        again = routes.lookup("team", "web")
        assert again is not None and again.backends == () and again.state == "restarting"
