"""A node's start and stop, around what tests/api/test_nodes.py covers (docs/scale.md): a name
that is up with another ORCH_HOME is refused (its agent would be replaced and its sandboxes
stranded), this home's own is restarted; a head that is not there, or a port out of range, is
said at once; a clean stop hands the node's work over. On SQLite and on PostgreSQL, the fake
engine and no Ray: the real thing is tests/integration/test_cluster.py."""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from orch import config as config_mod
from orch.cli.main import app
from orch.cluster import node as cluster_node
from orch.cluster import ray_node, ray_start
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.errors import Conflict, OrchError
from orch.models import RunStatus
from orch.sandbox.launcher import Isolation
from orch.services import deployed, leases, nodes
from orch.services.nodes import Joining
from orch.services.reconcile import reconcile
from orch.store.schema import NodeRow, ServiceDeploymentRow, ServiceLeaseRow, utcnow
from orch.workers import deploys
from orch.workers.nodes import NodeWork
from tests.api.test_nodes import claimed, hello, node, submit
from tests.api.test_service_cluster import deployed_on_a_node
from tests.api.test_services import bundle as service_bundle
from tests.api.test_services import deploy

KEY = base64.b64encode(b"k" * 32).decode()


def home_config(home: Path, database_url: str) -> config_mod.Config:
    return config_mod.load(home, environ={}).with_values(database_url=database_url)


def test_a_name_up_with_another_home_is_refused_and_this_home_s_is_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    with node(tmp_path, database_url, "b"):
        with pytest.raises(Conflict) as refused:
            cluster_node.check_name(home_config(tmp_path / "node-x", database_url), "b")
        assert "A node named b is up at 127.0.0.1" in refused.value.message
        assert "orch node stop b" in (refused.value.fix or "")
        assert cluster_node.check_name(home_config(tmp_path / "node-b", database_url), "b") is True
        assert cluster_node.check_name(home_config(tmp_path / "node-x", database_url), "c") is False


def test_a_silent_node_s_name_is_free_once_it_is_declared_lost(database_url: str, tmp_path: Path) -> None:
    with node(tmp_path, database_url, "b") as b:
        with b.store.session() as s:
            s.execute(update(NodeRow).values(seen_at=utcnow() - timedelta(seconds=nodes.LOST_AFTER + 1)))
        assert cluster_node.check_name(home_config(tmp_path / "node-x", database_url), "b") is False
        with b.store.session() as s:
            assert s.scalar(select(NodeRow.state)) == "lost"  # declared so, its work settled


def test_a_clean_stop_hands_the_node_s_work_over(
    api: httpx.Client, database_url: str, tmp_path: Path
) -> None:
    """NodeWork.stop (`orch node stop`): its row says stopped, its started run fails with
    `node stopped`, the one not started and its deployment under way are queued again, and
    its services' leases are free for another node at once."""
    hello(api, tmp_path)
    with node(tmp_path, database_url, "a") as a, node(tmp_path, database_url, "b") as b:
        starting, running = claimed(api, a)
        assert deploy(api, "web", service_bundle(tmp_path, {"main.py": ""}, "web")).status_code == 201
        dep_id = deploys.claim(a)
        assert dep_id is not None
        with a.store.session() as s:
            service_id = s.get(ServiceDeploymentRow, dep_id).service_id  # type: ignore[union-attr]
        assert leases.take_one(a, service_id)
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**30, slots=4, ray_node="ray-a")
        NodeWork(a, me).stop()
        assert {n["id"]: n["state"] for n in api.get("/v1/nodes").json()} == {"a": "stopped", "b": "up"}
        failed = api.get(f"/v1/runs/{running}").json()
        assert (failed["status"], failed["reason"]) == ("failed", "node stopped")
        assert (
            "The node a stopped while this run was running"
            in (api.get(f"/v1/runs/{running}/logs").json()["log"])
        )
        assert api.get(f"/v1/runs/{starting}").json()["status"] == "queued"
        with a.store.session() as s:
            assert s.scalar(select(ServiceDeploymentRow.status).where(ServiceDeploymentRow.id == dep_id)) == (
                "queued"
            )
            assert (
                s.scalar(select(ServiceLeaseRow.holder).where(ServiceLeaseRow.holder == a.instance)) is None
            )
        assert leases.take_one(b, service_id)  # at once, not after the lease's 10 s


class KilledByTheStop:
    """A launcher whose sandboxes run until it kills them, as the node's stop does: each then
    exits 137, as a SIGKILLed agent's does."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.killed = threading.Event()

    def run_container(
        self,
        spec: ContainerSpec,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_exit: Callable[[ContainerExit], None] | None = None,
    ) -> ContainerExit:
        self.running.set()
        assert self.killed.wait(60), "the stop never killed the sandbox"
        result = ContainerExit(137)
        if on_exit is not None:
            on_exit(result)
        return result

    def image_id(self, ref: str) -> str:
        return ref

    def kill(self, prefix: str) -> list[str]:
        if self.running.is_set():  # not the sweep of the node's start
            self.killed.set()
        return []

    def sweep(self, prefix: str) -> int:
        return 0

    def close(self) -> None:
        pass

    def let_go(self) -> None:
        pass


def wait_for(api: httpx.Client, run_id: str, status: str) -> None:
    for _ in range(100):  # bounded: 10 s
        shown = api.get(f"/v1/runs/{run_id}").json()
        if shown["status"] == status:
            return
        time.sleep(0.1)
    log = api.get(f"/v1/runs/{run_id}/logs").json()["log"]
    raise AssertionError(f"run {run_id} never became {status}: {shown}\n{log}")


def test_a_node_stop_fails_its_started_runs_as_node_stopped_not_as_the_kill_s_exit(
    api: httpx.Client, database_url: str, tmp_path: Path
) -> None:
    """The stop kills the runs' sandboxes (137): the runs say `node stopped`, as docs/scale.md
    has it, not `exit code 137: killed by SIGKILL` (found by a tester: the workers recorded the
    kill as the agent's own exit before `leave` could settle them)."""
    hello(api, tmp_path)
    with node(tmp_path, database_url, "a") as a:
        launcher = KilledByTheStop()
        a.launchers[Isolation.RUNC] = launcher
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**30, slots=2, ray_node="ray-a")
        work = NodeWork(a, me)
        work.start()
        try:
            run_id = submit(api)
            wait_for(api, run_id, "running")
            assert launcher.running.wait(30)
        finally:
            others = work.stop()
        assert launcher.killed.is_set() and others == 0
        shown = api.get(f"/v1/runs/{run_id}").json()
        assert (shown["status"], shown["reason"], shown["exit_code"]) == ("failed", "node stopped", None), (
            shown
        )
        log = api.get(f"/v1/runs/{run_id}/logs").json()["log"]
        assert "The node a stopped while this run was running; it was marked failed." in log, log


def test_an_agent_restarted_without_a_stop_fails_its_started_runs_naming_the_node(
    api: httpx.Client, database_url: str, tmp_path: Path
) -> None:
    """Ray starts a node's agent again when its process dies (killed), before anyone declared
    the node lost: its started runs fail `node lost`, their log saying the node restarted, not
    `the server stopped while the run was running` (a cluster's server never stopped; found by
    a tester); the one not started is queued again."""
    hello(api, tmp_path)
    with node(tmp_path, database_url, "a") as a:
        starting, running = claimed(api, a)  # the agent's earlier life, killed with these
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**30, slots=2, ray_node="ray-a")
        work = NodeWork(a, me)
        work.start()  # Ray's restart of the agent, on the same home
        try:
            failed = api.get(f"/v1/runs/{running}").json()
            assert (failed["status"], failed["reason"]) == ("failed", "node lost"), failed
            log = api.get(f"/v1/runs/{running}/logs").json()["log"]
            assert f"The node a {nodes.RESTARTED} while this run was running" in log, log
            again = api.get(f"/v1/runs/{starting}/logs").json()["log"]
            assert f"The node a {nodes.RESTARTED} before this run started; it was queued again." in again
            assert [n["state"] for n in api.get("/v1/nodes").json()] == ["up"]
        finally:
            work.stop()


def test_a_stopped_node_s_services_are_not_running_and_wait_for_another_node(
    api: httpx.Client,
    site: httpx.Client,
    workspace: tuple[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    """The last node stops: its service's containers are gone, so the service is not `running`
    with an uptime (found by a tester: `running 1/1`, and its proxy waited 5 s for a container
    that was removed); its replica waits, without a container, for the next node."""
    with deployed_on_a_node(api, database_url, tmp_path) as a:
        before = deployed.show(a, workspace[0], "web")
        assert before.state == "running" and before.container is not None
        me = Joining(id="a", address="127.0.0.1", cpus=2, memory=2**30, slots=4, ray_node="ray-a")
        assert NodeWork(a, me).stop() == 0  # no other node is up
        after = deployed.show(a, workspace[0], "web")
        assert (after.state, after.container, after.uptime, after.node) == ("starting", None, None, None)
        assert [(r.state, r.container) for r in after.replicas] == [("starting", None)]
        answer = site.get("/services/team/web/")
        assert answer.status_code == 503 and "is starting, not running" in answer.text, answer.text
        with node(tmp_path, database_url, "b") as b:  # the next node starts it at once
            b.probe = lambda address, port: True
            assert isinstance(a.engine, FakeEngine) and isinstance(b.engine, FakeEngine)
            b.engine.images_by_tag.update(a.engine.images_by_tag)  # as the registry would give it
            reconcile(b)
            again = deployed.show(b, workspace[0], "web")
            assert again.node == "b" and again.container is not None
            assert again.container.startswith(b.container_prefix) and again.restarts == 0, again


@pytest.fixture
def node_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What `orch node start` needs, and a record of the cluster calls it makes (none of them
    reaches Ray or a store: each is replaced)."""
    env = {
        "ORCH_HOME": str(tmp_path / "home"),
        "ORCH_DATABASE_URL": "postgresql://x@127.0.0.1:1/orch",
        "ORCH_REGISTRY": "127.0.0.1:5000",
        "ORCH_SECRET_KEY": KEY,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ORCH_NODE_PROXY_PORT", raising=False)
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(ray_node, "join", lambda *a: calls.append(("join", a)))
    found = {"id": "a", "capacity": {"slots": 1, "cpus": 1, "memory": 2**30}}
    monkeypatch.setattr(ray_node, "start_agent", lambda *a: calls.append(("start_agent", a)) or found)
    monkeypatch.setattr(ray_node, "stop_agent", lambda *a: calls.append(("stop_agent", a)))
    return calls


def closed_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def head() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.mark.parametrize("cluster", ["127.0.0.1:99999", "127.0.0.1:0", "[::1]:65536"])
def test_a_port_out_of_range_is_said_at_once(cluster: str, node_env: list[tuple[str, Any]]) -> None:
    result = CliRunner().invoke(app, ["node", "start", "--cluster", cluster, "--name", "a"])
    assert result.exit_code == 2, result.output
    assert "port from 1 to 65535" in result.output and node_env == []


def test_a_head_that_does_not_answer_is_said_before_ray_starts(node_env: list[tuple[str, Any]]) -> None:
    cluster = f"127.0.0.1:{closed_port()}"
    result = CliRunner().invoke(app, ["node", "start", "--cluster", cluster, "--name", "a"])
    assert result.exit_code == 2, result.output
    assert f"Nothing answers at {cluster}" in result.output and "Traceback" not in result.output
    assert node_env == []
    stopped = CliRunner().invoke(app, ["node", "stop", "a", "--cluster", cluster])
    assert stopped.exit_code == 2 and f"Nothing answers at {cluster}" in stopped.output


def test_a_ray_start_that_times_out_is_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: Any, **kwargs: Any) -> None:
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", slow)
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(OrchError) as failed:
            ray_node.join(cluster, "127.0.0.1", "a", 1, KEY)
    assert failed.value.message == f"This machine did not join the Ray cluster at {cluster} within 120 s."


def test_a_name_up_elsewhere_is_refused_before_joining(
    node_env: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def up_elsewhere(cfg: config_mod.Config, name: str) -> bool:
        raise Conflict(f"A node named {name} is up at 10.0.0.2.", "Pick another name.")

    monkeypatch.setattr(cluster_node, "check_name", up_elsewhere)
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        result = CliRunner().invoke(app, ["node", "start", "--cluster", cluster, "--name", "b"])
    assert result.exit_code == 2, result.output
    assert "A node named b is up at 10.0.0.2" in result.output and node_env == []


def test_this_home_s_node_up_is_stopped_before_it_starts_again(
    node_env: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_node, "check_name", lambda cfg, name: True)
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        result = CliRunner().invoke(app, ["node", "start", "--cluster", cluster, "--name", "a"])
    assert result.exit_code == 0, result.output
    assert [call for call, _ in node_env] == ["stop_agent", "join", "start_agent"]


def test_orch_node_stop_stops_the_named_node_through_the_cluster(node_env: list[tuple[str, Any]]) -> None:
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        result = CliRunner().invoke(app, ["node", "stop", "b", "--cluster", cluster])
    assert result.exit_code == 0, result.output
    assert "Node b stopped" in result.output
    assert node_env == [("stop_agent", (cluster, "b", KEY))]


@pytest.mark.parametrize(
    ("others", "said"),
    [
        (1, "Node b stopped: its services went to the other nodes."),
        (0, "Node b stopped. No other node is up: its services, and the runs and builds queued, wait"),
        (None, "Node b stopped; its agent did not answer, so its work is settled when the cluster"),
    ],
)
def test_orch_node_stop_says_where_the_node_s_services_went(
    others: int | None, said: str, node_env: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "its services went to the other nodes" when no other node is up (found by a tester)."""
    monkeypatch.setattr(ray_node, "stop_agent", lambda *a: others)
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        result = CliRunner().invoke(app, ["node", "stop", "b", "--cluster", cluster])
    assert result.exit_code == 0, result.output
    assert said in " ".join(result.output.split()), result.output


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("999.1.1.1", "it is neither an IP address nor a host name known here"),
        ("10.255.255.1", "(Cannot assign requested address)"),
    ],
)
def test_an_address_not_of_this_machine_is_said_to_be_the_address_s_fault(
    address: str, why: str, node_env: list[tuple[str, Any]]
) -> None:
    """`--address` that is not this machine's: said as such, before anything joins, not as the
    head's fault with a Python exception's name (found by a tester: `socket.gaierror: [Errno
    -2] ...`, then "Check that its head runs there")."""
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        result = CliRunner().invoke(
            app, ["node", "start", "--cluster", cluster, "--name", "a", "--address", address]
        )
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"--address {address}" in said.replace("'", "") and "is not an address of this machine" in said
    assert why in said and "--address an address of this machine" in said
    assert "gaierror" not in said and "Errno" not in said and "head" not in said and "Traceback" not in said
    assert node_env == []  # nothing joined, nothing started


def test_ray_s_fixed_ports_are_free_ones_picked_at_start() -> None:
    """Ray's defaults (client server 10001, dashboard 8265, dashboard agent 52365, workers in
    10002-19999) collide with any other Ray on the machine."""
    head_argv = ray_start.free_ports(["start", "--head", "--node-ip-address=127.0.0.1", "--port=7000"])
    flags = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in head_argv[1:] if "=" in arg}
    for flag in (*ray_start.HEAD_PORTS, *ray_start.NODE_PORTS):
        assert 1 <= int(flags[flag]) <= 65535
    assert (flags["--min-worker-port"], flags["--max-worker-port"], flags["--port"]) == ("0", "0", "7000")
    node_argv = ray_start.free_ports(["start", "--address=h:1", "--dashboard-agent-listen-port=9"])
    assert [a for a in node_argv if a.startswith("--dashboard-agent-listen-port")] == [
        "--dashboard-agent-listen-port=9"
    ]
    assert not any(a.startswith(ray_start.HEAD_PORTS) for a in node_argv)
    assert ray_start.free_ports(["stop"]) == ["stop"]


def test_a_node_serves_its_own_metrics_on_its_proxy(database_url: str, tmp_path: Path) -> None:
    """A node's runs are counted in its process: its proxy serves them at /metrics, with the
    metrics token's rule, and no relay token (a scraper has none)."""
    from orch import metrics
    from orch.server.node_proxy import NodeProxy

    with node(tmp_path, database_url, "a", secret_key=KEY, metrics_token="scrape") as a:
        metrics.of(a).run_finished(RunStatus.SUCCEEDED)
        proxy = NodeProxy(a, "127.0.0.1", 0)
        proxy.start()
        try:
            url = f"http://{proxy.address}/metrics"
            assert httpx.get(url, timeout=30).status_code == 401
            found = httpx.get(url, headers={"Authorization": "Bearer scrape"}, timeout=30)
        finally:
            proxy.stop()
    assert found.status_code == 200, found.text
    assert 'orch_runs_finished_total{status="succeeded"} 1.0' in found.text


def test_the_ports_picked_for_ray_differ_from_each_other_and_from_those_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The system hands out a port it gave a moment ago once that socket is closed: a head given
    `--port=45393` (picked free by its caller) had its dashboard agent picked 45393 too, and
    Ray refused to start ("trying to use a port number 45393 that is used by other
    components")."""
    handed = iter([45393, 45393, 45400, 45400, 45401, 45402, 45403])

    class Socket:
        def __init__(self, *_: object) -> None:
            self.port = 0

        def __enter__(self) -> Socket:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def bind(self, _: object) -> None:
            self.port = next(handed)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(ray_start.socket, "socket", Socket)
    argv = ray_start.free_ports(["start", "--head", "--node-ip-address=127.0.0.1", "--port=45393"])
    flags = ray_start.NODE_PORTS + ray_start.HEAD_PORTS
    picked = [int(a.split("=", 1)[1]) for a in argv if a.startswith(flags)]
    assert len(picked) == 3 and len(set(picked)) == 3 and 45393 not in picked, argv
    given = ["start", "--port", "6379", "--dashboard-port=8265", "--address=h:1"]
    assert ray_start.given_ports(given) == {6379, 8265}


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "postgresql://x@127.0.0.1:1/orch?connect_timeout=abc",
            "has an option psycopg refuses (connect_timeout)",
        ),
        ("postgresql://x@127.0.0.1:1/orch?connect_timeout=1", "Cannot open the database at"),
    ],
)
def test_a_store_url_orch_cannot_use_is_said_as_the_server_says_it(
    url: str, said: str, node_env: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orch node start` and `orch admin build-images` (with a registry: it records the images'
    digests in the store) check ORCH_DATABASE_URL as a server's start does (it was 'This is a
    bug' for an option psycopg refuses)."""
    monkeypatch.setenv("ORCH_DATABASE_URL", url)
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        result = CliRunner().invoke(app, ["node", "start", "--cluster", cluster, "--name", "a"])
    assert result.exit_code == 2, result.output
    assert said in result.output and "bug" not in result.output and node_env == []
    assert "postgresql://x@127.0.0.1:1/orch" in result.output  # the URL as written, not the engine's
    built = CliRunner().invoke(app, ["admin", "build-images"])
    assert built.exit_code == 2, built.output
    assert said in built.output and "bug" not in built.output
