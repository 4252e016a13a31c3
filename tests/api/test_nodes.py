"""Cluster nodes on the store (services/nodes.py, workers/nodes.py), on the fake engine: a node
registers and says it is alive, its claims record it, it prefers runs whose image it holds and
leaves runs to nodes with more room for a moment, and a lost node's runs never stay stuck: those
not started are queued again, those started fail with the reason `node lost`. On SQLite and on
PostgreSQL. The real thing, on Ray and Podman, is tests/integration/test_cluster.py."""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from orch.builder import base_images
from orch.engine.fake import FakeEngine
from orch.models import RunStatus
from orch.services import environments as envs
from orch.services import images, leases, nodes
from orch.services.nodes import Joining, _mine_to_take, _Other
from orch.services.platform import Platform
from orch.store.schema import BuildRow, NodeRow, RunRow, ServiceDeploymentRow, utcnow
from orch.workers import deploys
from orch.workers import nodes as node_work
from orch.workers import runs as run_worker
from orch.workers.nodes import NodeWork, Watch
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli import cli
from tests.api.test_registry_runs import REGISTRY, pin
from tests.api.test_services import bundle as service_bundle
from tests.api.test_services import deploy
from tests.conftest import close_platform, drain, drain_runs, make_platform

__all__ = ["cli"]  # the fixture


REGISTRY_SETTINGS = {"registry": REGISTRY, "registry_tls_verify": False}


@contextmanager
def node(
    tmp_path: Path,
    database_url: str,
    name: str,
    slots: int = 4,
    reaching: FakeEngine | None = None,
    **settings: object,
) -> Iterator[Platform]:
    """A platform working as cluster node `name` on the same store, with an engine of its own
    (that reaches the same registry as `reaching`, when given)."""
    engine = FakeEngine()
    for r in base_images.RECIPES:
        engine.add_image(base_images.image_tag(r.name), base_images.labels(r.name))
    if reaching is not None:
        engine.registry = reaching.registry  # type: ignore[attr-defined]
        settings = {**REGISTRY_SETTINGS, **settings}
    found = make_platform(
        tmp_path / f"node-{name}", engine, database_url=database_url, run_workers=slots, **settings
    )
    found.node = name
    nodes.register(
        found,
        Joining(id=name, address="127.0.0.1", cpus=2, memory=2**33, slots=slots, ray_node=f"ray-{name}"),
    )
    try:
        yield found
    finally:
        close_platform(found)


@pytest.fixture
def pinned(api: httpx.Client, platform: Platform, workspace: tuple[str, str], tmp_path: Path) -> str:
    """Agent `tooled` pinned to an environment built on the server's side, whose image went to
    the registry: that image."""
    platform.config = platform.config.with_values(**REGISTRY_SETTINGS)
    return pin(api, platform, workspace[0], tmp_path)[0]


def hello(api: httpx.Client, tmp_path: Path) -> None:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201


def submit(api: httpx.Client, agent: str = "hello") -> str:
    return str(api.post("/v1/runs", json={"agent": agent}).json()["id"])


def age(platform: Platform, seconds: float) -> None:
    """Make every queued run look `seconds` old (0: just queued, whatever the submit took on a
    loaded machine: a claim's wait of SPREAD_FOR, 0.5 s, had passed before it looked)."""
    with platform.store.session() as s:
        s.execute(update(RunRow).values(queued_at=utcnow() - timedelta(seconds=seconds)))


def claimed(api: httpx.Client, a: Platform) -> tuple[str, str]:
    """Two runs claimed by node `a`: (one starting, one running)."""
    starting, running = submit(api), submit(api)
    age(a, 10)
    assert {nodes.claim_run(a, "a"), nodes.claim_run(a, "a")} == {starting, running}
    with a.store.session() as s:
        s.execute(update(RunRow).where(RunRow.id == running).values(status=RunStatus.RUNNING.value))
    return starting, running


def test_a_node_is_listed_and_its_runs_name_it(api: httpx.Client, database_url: str, tmp_path: Path) -> None:
    assert api.get("/v1/nodes").json() == []  # one machine: no nodes
    hello(api, tmp_path)
    with node(tmp_path, database_url, "a") as a:
        run_id = submit(api)
        age(a, 10)
        assert drain_runs(a) == 1
        shown = api.get(f"/v1/runs/{run_id}").json()
        assert (shown["status"], shown["node"]) == ("succeeded", "a")
        [listed] = api.get("/v1/nodes").json()
        assert listed["id"] == "a" and listed["state"] == "up" and listed["address"] == "127.0.0.1"
        assert listed["capacity"] == {"cpus": 2, "memory": 2**33, "slots": 4} and listed["running"] == 0
        assert nodes.heartbeat(a, "a", 3, {"img:1"})
        assert api.get("/v1/nodes").json()[0]["running"] == 3
        nodes.leave(a, "a")
        assert api.get("/v1/nodes").json()[0]["state"] == "stopped"


def test_a_lost_node_s_unstarted_runs_are_queued_again_and_started_ones_fail(
    api: httpx.Client, platform: Platform, database_url: str, tmp_path: Path
) -> None:
    hello(api, tmp_path)
    with node(tmp_path, database_url, "a") as a, node(tmp_path, database_url, "b") as b:
        starting, running = claimed(api, a)
        assert nodes.settle_lost(b, {"ray-b"}) == ["a"]  # Ray says a's machine is gone
        assert nodes.settle_lost(b, {"ray-b"}) == [] and nodes.settle_lost(platform) == []  # once
        again = api.get(f"/v1/runs/{starting}").json()
        assert (again["status"], again["node"]) == ("queued", None)
        failed = api.get(f"/v1/runs/{running}").json()
        assert (failed["status"], failed["reason"]) == ("failed", "node lost")
        assert "was lost while this run was running" in api.get(f"/v1/runs/{running}/logs").json()["log"]
        assert "queued again" in api.get(f"/v1/runs/{starting}/logs").json()["log"]
        assert [n["state"] for n in api.get("/v1/nodes").json()] == ["lost", "up"]
        assert not nodes.heartbeat(a, "a", 0, set())  # a finds out, and must stop
        assert drain_runs(b) == 1  # the queued one goes to b
        done = api.get(f"/v1/runs/{starting}").json()
        assert (done["status"], done["node"]) == ("succeeded", "b")


def test_a_silent_node_is_lost_whatever_ray_says(
    api: httpx.Client, platform: Platform, database_url: str, tmp_path: Path
) -> None:
    with node(tmp_path, database_url, "a") as a:
        assert nodes.settle_lost(platform) == []
        with a.store.session() as s:
            s.execute(update(NodeRow).values(seen_at=utcnow() - timedelta(seconds=nodes.LOST_AFTER + 1)))
        assert nodes.settle_lost(platform) == ["a"]


def test_a_node_prefers_runs_whose_image_it_holds(
    api: httpx.Client, pinned: str, fake_engine: FakeEngine, database_url: str, tmp_path: Path
) -> None:
    image = pinned
    with (
        node(tmp_path, database_url, "a", reaching=fake_engine) as a,
        node(tmp_path, database_url, "b", reaching=fake_engine) as b,
    ):
        b.present_base_tags.add(image)
        assert nodes.heartbeat(b, "b", 0, b.present_base_tags)
        run_id = submit(api, "tooled")
        age(a, 0)
        assert nodes.claim_run(a, "a") is None  # b holds the image and has room: left to b
        age(a, nodes.PREFER_FOR)
        assert nodes.claim_run(a, "a") == run_id  # waited long enough: a takes it and pulls
        nodes.settle_lost(a, {"ray-a"})
        del run_id
        fresh = submit(api, "tooled")
        assert nodes.claim_run(b, "b") == fresh  # holds it: takes it at once


def test_a_node_lets_go_of_the_images_no_environment_runs_any_more(
    api: httpx.Client,
    pinned: str,
    platform: Platform,
    workspace: tuple[str, str],
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An environment rebuilt or deleted on the cluster's server (which holds none of its
    images): the image a node pulled for its runs goes from the node, not at its next start
    (which removes only what it built itself: a pulled image stayed for good). What an
    environment runs stays, and so does what a build under way on the node makes."""
    first = pinned
    with node(tmp_path, database_url, "a", reaching=fake_engine) as a:
        submit(api, "tooled")
        assert drain_runs(a) == 1
        assert first in a.present_base_tags and a.engine.inspect_image(first) is not None
        assert images.release_held(a) == []  # `tools` runs it
        rebuilt = api.post("/v1/environments/tools/build", json={"no_cache": True})
        assert rebuilt.status_code == 202, rebuilt.text
        drain(platform)  # on the server's side: `tools` moves to a new image
        later = {"name": "later", "dockerfile": "FROM e2bdev/code-interpreter:latest\nRUN echo later\n"}
        assert api.post("/v1/environments", json=later).status_code == 201
        with a.store.session() as s:  # what its build, queued, makes if this node takes it
            made = s.scalars(select(BuildRow).where(BuildRow.status == "queued")).one()
            in_flight = images.environment_tag(a, made.cache_key, made.id)
        a.engine.add_image(in_flight)  # type: ignore[attr-defined]
        a.present_base_tags.add(in_flight)

        assert images.release_held(a) == [first]
        assert a.engine.inspect_image(first) is None and first not in a.present_base_tags
        assert a.engine.inspect_image(in_flight) is not None and in_flight in a.present_base_tags

        submit(api, "tooled")
        assert drain_runs(a) == 1
        second = envs.show(platform, workspace[0], "tools").image
        assert second is not None and second != first and second in a.present_base_tags
        assert api.delete("/v1/agents/tooled").status_code == 200
        assert api.delete("/v1/environments/tools").status_code == 200
        monkeypatch.setattr(nodes, "HEARTBEAT", 0.05)
        monkeypatch.setattr(node_work, "RELEASE_EVERY", 0.0)  # the node's heartbeat does it
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**30, slots=2, ray_node="ray-a")
        work = NodeWork(a, me, alive=lambda: {"ray-a"})
        work.start()
        try:
            for _ in range(200):  # bounded: 10 s
                if a.engine.inspect_image(second) is None:
                    break
                threading.Event().wait(0.05)
        finally:
            work.stop()
        assert a.engine.inspect_image(second) is None and second not in a.present_base_tags
        assert a.engine.inspect_image(in_flight) is not None


def test_a_node_started_again_holds_the_images_it_held_that_are_still_there(
    api: httpx.Client,
    pinned: str,
    platform: Platform,
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    """Its heartbeat's list of images outlives it: a restart holds again what the engine still
    has (the cluster went on leaving it the runs of them, and it lets go of the unused ones; an
    image pulled in an earlier life stayed for good before), not what went meanwhile."""
    image = pinned
    base = base_images.image_tag("python")
    gone = "localhost/orch-env/0123456789ab:removed-by-hand"
    with node(tmp_path, database_url, "a", reaching=fake_engine) as a:
        submit(api, "tooled")
        assert drain_runs(a) == 1 and image in a.present_base_tags
        a.engine.add_image(gone)  # type: ignore[attr-defined]
        held = {*a.present_base_tags, base, gone}
        assert nodes.heartbeat(a, "a", 0, held)
        a.engine.remove_image(gone)  # `podman rmi` while it was down
        a.present_base_tags.clear()  # a new process
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**33, slots=4, ray_node="ray-a")
        nodes.register(a, me)
        assert a.present_base_tags == {image, base}
        rebuilt = api.post("/v1/environments/tools/build", json={"no_cache": True})
        assert rebuilt.status_code == 202, rebuilt.text
        drain(platform)
        assert images.release_held(a) == [image] and a.engine.inspect_image(image) is None
        assert a.present_base_tags == {base}
        assert nodes.heartbeat(a, "a", 0, a.present_base_tags)

    # A name reused with another home (whose engine has the base image too): what the node of
    # that name held is not this one's.
    with node(tmp_path / "elsewhere", database_url, "a", reaching=fake_engine) as other:
        assert other.instance != a.instance and other.present_base_tags == set()


def test_runs_spread_to_the_node_with_more_room(api: httpx.Client, database_url: str, tmp_path: Path) -> None:
    hello(api, tmp_path)
    with (
        node(tmp_path, database_url, "small", slots=1) as small,
        node(tmp_path, database_url, "big", slots=8),
    ):
        run_id = submit(api)
        age(small, 0)
        assert nodes.claim_run(small, "small") is None  # big has more room: left to it for a moment
        age(small, nodes.SPREAD_FOR)
        assert nodes.claim_run(small, "small") == run_id


def waited(platform: Platform, seconds: float = nodes.SPREAD_FOR) -> None:
    """Make every queued deployment look SPREAD_FOR (or `seconds`) old."""
    with platform.store.session() as s:
        since = utcnow() - timedelta(seconds=seconds)
        s.execute(update(ServiceDeploymentRow).values(queued_at=since))


def test_a_new_service_goes_to_the_node_that_runs_fewer(
    api: httpx.Client, database_url: str, tmp_path: Path
) -> None:
    """The node that deploys a service holds its lease and runs it: a node that supervises more
    services than another leaves a queued deployment to it for SPREAD_FOR."""
    with node(tmp_path, database_url, "busy") as busy, node(tmp_path, database_url, "idle") as idle:
        for name in ("one", "two"):
            assert deploy(api, name, service_bundle(tmp_path, {"main.py": ""}, name)).status_code == 201
            waited(busy)
            dep_id = deploys.claim(busy)
            assert dep_id is not None
            with busy.store.session() as s:  # deployed by busy: its lease is busy's
                service_id = s.get(ServiceDeploymentRow, dep_id).service_id  # type: ignore[union-attr]
            assert leases.take_one(busy, service_id)
        assert deploy(api, "three", service_bundle(tmp_path, {"main.py": ""}, "three")).status_code == 201
        waited(busy, 0)  # just queued, however long the deploy took
        assert deploys.claim(busy) is None  # idle runs none: left to it for a moment
        waited(busy)
        assert deploys.claim(busy) is not None  # nobody took it: whoever looks first
        assert deploy(api, "four", service_bundle(tmp_path, {"main.py": ""}, "four")).status_code == 201
        assert deploys.claim(idle) is not None  # at once: no node runs fewer than idle


@pytest.mark.parametrize(
    ("image", "waited", "mine", "free", "others", "takes"),
    [
        (None, 0.0, set(), 4, [], True),  # nobody else: take it
        ("img", 0.0, {"img"}, 1, [_Other(frozenset({"img"}), 8)], True),  # holds the image
        ("img", 0.0, set(), 4, [_Other(frozenset({"img"}), 1)], False),  # another holds it
        ("img", nodes.PREFER_FOR, set(), 4, [_Other(frozenset({"img"}), 1)], True),  # waited enough
        ("img", 0.0, set(), 4, [_Other(frozenset(), 2)], True),  # nobody holds it, I have more room
        (None, 0.0, set(), 1, [_Other(frozenset(), 2)], False),  # another has more room
        (None, nodes.SPREAD_FOR, set(), 1, [_Other(frozenset(), 2)], True),
    ],
)
def test_which_runs_a_node_takes(
    image: str | None, waited: float, mine: set[str], free: int, others: list[_Other], takes: bool
) -> None:
    assert _mine_to_take(image, waited, mine, free, others) is takes


def test_a_node_works_until_it_is_declared_lost(
    api: httpx.Client, platform: Platform, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NodeWork: registers, runs the queue's runs on its own engine, beats, and stops when it
    finds itself declared lost."""
    monkeypatch.setattr(nodes, "HEARTBEAT", 0.1)
    hello(api, tmp_path)
    lost = threading.Event()
    with node(tmp_path, database_url, "a") as a:
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**30, slots=2, ray_node="ray-a")
        work = NodeWork(a, me, alive=lambda: {"ray-a"}, on_lost=lost.set)
        work.start()
        try:
            run_id = submit(api)
            for _ in range(600):  # the node's own workers take it (bounded: 60 s)
                if api.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded":
                    break
                threading.Event().wait(0.1)
            shown = api.get(f"/v1/runs/{run_id}").json()
            assert (shown["status"], shown["node"]) == ("succeeded", "a"), shown
            assert api.get("/v1/nodes").json()[0]["capacity"]["slots"] == 2
            assert nodes.settle_lost(platform, set()) == ["a"]  # Ray says a's machine is gone
            assert lost.wait(10), "the node never found out it was lost"
            assert api.get("/v1/nodes").json()[0]["state"] == "lost"
        finally:
            work.stop()


def test_claims_without_a_node_record_none(api: httpx.Client, platform: Platform, tmp_path: Path) -> None:
    hello(api, tmp_path)
    run_id = submit(api)
    assert run_worker.claim(platform) == run_id
    with platform.store.session() as s:
        row = s.get(RunRow, run_id)
        assert row is not None and row.node is None and row.claimed_by == platform.instance


def test_a_run_queued_on_a_cluster_with_no_node_up_says_why_it_waits(
    api: httpx.Client, platform: Platform, database_url: str, tmp_path: Path
) -> None:
    hello(api, tmp_path)
    own = platform.config
    platform.config = own.with_values(cluster="127.0.0.1:6379")  # a cluster's server
    try:
        waiting = submit(api)
        log = api.get(f"/v1/runs/{waiting}/logs").json()["log"]
        assert log == nodes.NO_NODE + "\n"
        assert "no node of the cluster is up" in log and "orch node start" in log
        with node(tmp_path, database_url, "a") as a:
            with_a_node = submit(api)
            age(a, 10)
            assert drain_runs(a) == 2  # the waiting run starts once a node is up
        assert api.get(f"/v1/runs/{with_a_node}/logs").json()["log"].count("waiting for a node") == 0
        ran = api.get(f"/v1/runs/{waiting}").json()
        assert (ran["status"], ran["node"]) == ("succeeded", "a")
        log = api.get(f"/v1/runs/{waiting}/logs").json()["log"]
        assert log.startswith(nodes.NO_NODE + "\n") and "→ environment" in log, log  # goes on after it
    finally:
        platform.config = own
    # One machine's server runs its own work: no such line.
    assert "waiting for a node" not in api.get(f"/v1/runs/{submit(api)}/logs").json()["log"]


def test_orch_node_list_through_the_cli(  # type: ignore[no-untyped-def]
    cli, api: httpx.Client, platform: Platform, database_url: str, tmp_path: Path
) -> None:
    empty = cli("node", "list")
    assert empty.exit_code == 0 and "No nodes: this server runs its work on its own machine." in empty.output
    assert api.get("/v1/nodes").headers["orch-work"] == "server"
    # A cluster's server with no node up said it ran its work on its own machine: it runs none.
    own = platform.config
    platform.config = own.with_values(cluster="127.0.0.1:6379")
    try:
        waiting = cli("node", "list")
        assert waiting.exit_code == 0, waiting.output
        assert "No nodes: this server's runs, builds and services wait until a node" in waiting.output
        assert api.get("/v1/nodes").headers["orch-work"] == "cluster"
    finally:
        platform.config = own
    assert json.loads(cli("node", "list", "--json").output) == []
    with node(tmp_path, database_url, "a"):
        [listed] = json.loads(cli("node", "list", "--json").output)
        assert (listed["id"], listed["state"], listed["capacity"]["slots"]) == ("a", "up", 4)
        table = cli("node", "list").output
        assert "a" in table and "127.0.0.1" in table and "8.0 GiB" in table


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["--cluster", "nowhere"], {}, "is not HOST:PORT"),
        (["--cluster", "127.0.0.1:6379", "--name", "Bad_Name"], {}, "is not a node name"),
        (["--cluster", "127.0.0.1:6379", "--name", "a"], {}, "is not a PostgreSQL URL"),
        (
            ["--cluster", "127.0.0.1:6379", "--name", "a"],
            {"ORCH_DATABASE_URL": "mysql://x@127.0.0.1:1/orch"},
            "is not a PostgreSQL URL",
        ),
        # postgres:// is PostgreSQL to the server's store, and so to a node: the store passes.
        (
            ["--cluster", "127.0.0.1:6379", "--name", "a"],
            {"ORCH_DATABASE_URL": "postgres://x@127.0.0.1:1/orch"},
            "pulls the images other nodes built from a registry",
        ),
        (
            ["--cluster", "127.0.0.1:6379", "--name", "a"],
            {"ORCH_DATABASE_URL": "postgresql://x@127.0.0.1:1/orch"},
            "pulls the images other nodes built from a registry",
        ),
        (
            ["--cluster", "127.0.0.1:6379", "--name", "a"],
            {"ORCH_DATABASE_URL": "postgresql://x@127.0.0.1:1/orch", "ORCH_REGISTRY": "127.0.0.1:5000"},
            "ORCH_SECRET_KEY is not set",
        ),
    ],
)
def test_orch_node_start_refuses_what_a_node_cannot_work_with(
    args: list[str], env: dict[str, str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sentence and exit 2, before anything joins Ray."""
    from typer.testing import CliRunner

    from orch.cli.main import app
    from orch.cluster import ray_node

    for name in ("ORCH_DATABASE_URL", "ORCH_REGISTRY", "ORCH_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    joined: list[object] = []
    monkeypatch.setattr(ray_node, "join", lambda *a: joined.append(a))
    result = CliRunner().invoke(app, ["node", "start", *args])
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output
    assert joined == []


def test_orch_node_start_says_when_its_proxy_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH_NODE_PROXY_PORT in use: a sentence and exit 2 before joining, not a failure in Ray."""
    import socket

    from typer.testing import CliRunner

    from orch.cli.main import app
    from orch.cluster import ray_node

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    env = {
        "ORCH_HOME": str(tmp_path / "home"),
        "ORCH_DATABASE_URL": "postgresql://x@127.0.0.1:1/orch",
        "ORCH_REGISTRY": "127.0.0.1:5000",
        "ORCH_SECRET_KEY": base64.b64encode(b"k" * 32).decode(),
        "ORCH_NODE_PROXY_PORT": str(taken.getsockname()[1]),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    joined: list[object] = []
    monkeypatch.setattr(ray_node, "join", lambda *a: joined.append(a))
    try:
        result = CliRunner().invoke(app, ["node", "start", "--cluster", "127.0.0.1:6379", "--name", "a"])
    finally:
        taken.close()
    assert result.exit_code == 2, result.output
    assert f"Cannot listen on 127.0.0.1:{env['ORCH_NODE_PROXY_PORT']}" in result.output
    assert "ORCH_NODE_PROXY_PORT" in result.output and joined == []


def test_orch_node_start_without_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from orch.cli.main import app

    monkeypatch.setitem(sys.modules, "ray", None)  # as on a machine without the cluster extra
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["node", "start", "--cluster", "127.0.0.1:6379", "--name", "a"])
    assert result.exit_code == 2, result.output
    assert "needs Ray" in result.output and "pip install 'orch[cluster]'" in result.output


def test_a_cluster_server_s_watch_declares_a_silent_node_lost(
    api: httpx.Client, platform: Platform, database_url: str, tmp_path: Path
) -> None:
    with node(tmp_path, database_url, "a") as a:
        with a.store.session() as s:  # its last heartbeat was long ago
            s.execute(update(NodeRow).values(seen_at=utcnow() - timedelta(seconds=60)))
        watch = Watch(platform, every=0.05)
        watch.start()
        try:
            for _ in range(200):
                if api.get("/v1/nodes").json()[0]["state"] == "lost":
                    break
                threading.Event().wait(0.05)
        finally:
            watch.stop()
        assert api.get("/v1/nodes").json()[0]["state"] == "lost"
