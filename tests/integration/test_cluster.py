"""A real local cluster (scripts/cluster-up): PostgreSQL, a registry, a Ray head, two orch nodes
with Podman storages of their own, and one server, all on 127.0.0.1. Runs spread over both
nodes; a server restart leaves the cluster's work alone; an environment built on one node runs
on the other, its image pulled by digest through the registry; a service deployed through the
server runs on a node and is served (relayed to the node's proxy), and its output answered, by
the server; a sandbox on demand created through the server is held by a node; a node killed
mid-run fails its started run with `node lost`, and later runs go to the node that is left. The
cluster takes none of Ray's fixed ports (they are held by the test meanwhile), a second node
of a name that is up is refused, a node stops cleanly and starts again, and scripts/cluster-down
leaves no process of the cluster running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from orch.client.transport import CREATE_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ORCH = ROOT / ".venv" / "bin" / "orch"
SLEEPER = "\n".join(
    [
        "import os, time",
        "print('start', flush=True)",
        "time.sleep(float(os.environ.get('SLEEP', '0')))",
        "print('end')",
        "",
    ]
)
ECHO = "import os\nprint('echo', os.environ['ORCH_INPUT'])\n"
WEB = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['ORCH_SERVICE']} {self.path}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        print("served", self.path, flush=True)

print("listening", flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


@dataclass
class Cluster:
    dir: Path
    url: str
    token: str
    # Processes a test started for the cluster (a server started again): waited for at the end.
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def containers(self, node: str, service_id: str) -> list[str]:
        """The names of `service_id`'s containers in node `node`'s Podman storage."""
        conf = self.dir / f"node-{node}" / "storage.conf"
        out = subprocess.run(
            ["podman", "ps", "--filter", f"label=org.orch.service={service_id}", "--format", "{{.Names}}"],
            env={**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)},
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "ORCH_URL": self.url,
            "ORCH_TOKEN": self.token,
            "ORCH_HOME": str(self.dir / "cli"),
        }
        return subprocess.run(
            [str(ORCH), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
        )


# Ray's fixed default ports (client server, dashboard, dashboard agent, dashboard metrics, the
# first worker port): held by the test while the cluster runs, which must not need them.
RAY_DEFAULT_PORTS = (10001, 8265, 52365, 44227, 10002)


def hold(ports: tuple[int, ...]) -> list[socket.socket]:
    """Listen on each of `ports` on 127.0.0.1 that is free (one that is not is held already)."""
    held = []
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            s.close()
            continue
        held.append(s)
    return held


def alive(pids: dict[int, bytes]) -> list[int]:
    """Those of `pids` (pid: its start time) still running (not ended, not a zombie)."""
    left = []
    for pid, since in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        if fields[19] == since and fields[0] != b"Z":
            left.append(pid)
    return left


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    where = Path(f"/tmp/oc-{uuid.uuid4().hex[:8]}")  # short: Ray's socket paths are bounded
    started: list[subprocess.Popen[bytes]] = []
    held = hold(RAY_DEFAULT_PORTS)
    ours: dict[int, bytes] = {}
    try:
        up = subprocess.run(
            [str(ROOT / "scripts" / "cluster-up"), str(where)], capture_output=True, text=True, timeout=600
        )
        assert up.returncode == 0, up.stderr[-3000:]
        last = json.loads(up.stdout.strip().splitlines()[-1])
        assert set(last) == {"url", "token"}
        found = Cluster(where, last["url"], last["token"], started)
        agents = tmp_path_factory.mktemp("agents")
        for name, code in (("sleeper", SLEEPER), ("echo", ECHO)):
            (agents / name).mkdir()
            (agents / name / "main.py").write_text(code)
            (agents / name / "orch.yaml").write_text(f"name: {name}\nentrypoint: main.py\n")
            published = found.cli("publish", str(agents / name))
            assert published.returncode == 0, published.stderr
        yield found
    finally:
        for pid in marked(Cluster(where, "", "")):  # each with its start time: pids are reused
            with contextlib.suppress(OSError):
                ours[pid] = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19]
        down = subprocess.run(
            [str(ROOT / "scripts" / "cluster-down"), str(where)], capture_output=True, text=True, timeout=300
        )
        for proc in started:
            proc.wait(30)
        for sock in held:
            sock.close()
        assert down.returncode == 0, down.stderr
        assert not where.exists()
        assert len(ours) > 10 and alive(ours) == [], [_cmdline(pid) for pid in alive(ours)]


def wait_run(api: httpx.Client, run_id: str, until: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = api.get(f"/v1/runs/{run_id}").json()
        if run["status"] in until:
            return run
        assert time.monotonic() < deadline, f"run {run_id} stayed {run['status']}"
        time.sleep(0.2)


def listening(pid: int) -> list[str]:
    """The local addresses process `pid` listens on (TCP)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def marked(cluster: Cluster) -> list[int]:
    """The processes of the cluster, as scripts/cluster-down finds them: the mark in their
    environment, or a file of the cluster's directory open (Ray's agents' new process titles
    overwrite their environment, but they write their logs there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            fds = list((proc / "fd").iterdir())
        except OSError:  # ended meanwhile
            continue
        files = []
        for fd in fds:
            with contextlib.suppress(OSError):  # closed meanwhile
                files.append(os.readlink(fd))
        if f"ORCH_LOCAL_CLUSTER={cluster.dir}".encode() in env or any(
            f.startswith(f"{cluster.dir}/") for f in files
        ):
            found.append(int(proc.name))
    return found


def test_the_cluster_is_up_on_loopback_only(cluster: Cluster) -> None:
    with cluster.api() as api:
        found = api.get("/v1/nodes").json()
    assert [(n["id"], n["state"]) for n in found] == [("a", "up"), ("b", "up")]
    assert all(n["capacity"]["cpus"] >= 1 and n["capacity"]["slots"] >= 1 for n in found)
    pids = marked(cluster)
    addresses = [a for pid in pids for a in listening(pid)]
    assert len(pids) > 10 and len(addresses) > 5  # PostgreSQL, the registry, Ray's, the server
    assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")) for a in addresses), addresses
    listed = cluster.cli("node", "list", "--json")
    assert listed.returncode == 0 and [n["id"] for n in json.loads(listed.stdout)] == ["a", "b"]
    # Ray's fixed ports are held by the test: a Ray process that wanted one says so in its log
    # (its server is then missing, silently: Ray starts on without it).
    said = [
        f"{log.name}: {line.strip()}"
        for log in (cluster.dir / "ray" / "session_latest" / "logs").iterdir()
        if log.is_file()
        for line in log.read_text(errors="replace").splitlines()
        if any(s in line.lower() for s in ("failed to bind", "already occupied", "address already in use"))
    ]
    assert said == [], said


def test_ray_refuses_a_caller_without_the_cluster_s_token(cluster: Cluster) -> None:
    """Ray's servers answer only callers with the token derived from the cluster's key: anyone
    who reaches Ray's ports could otherwise run code on every node."""
    port = json.loads((cluster.dir / "cluster.json").read_text())["ray_port"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "ORCH_"))}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # one machine's Ray: its own address is 127.0.0.1
    status = [str(ROOT / ".venv" / "bin" / "ray"), "status", f"--address=127.0.0.1:{port}"]
    refused = subprocess.run(status, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "AuthenticationError" in refused.stderr, refused.stderr[-2000:]
    key = next(
        line.split("=", 1)[1]
        for line in Path(f"/proc/{int((cluster.dir / 'server' / 'pid').read_text())}/environ")
        .read_bytes()
        .decode()
        .split("\0")
        if line.startswith("ORCH_SECRET_KEY=")
    )
    from orch.cluster.ray_node import auth

    answered = subprocess.run(status, env={**env, **auth(key)}, capture_output=True, text=True, timeout=120)
    assert answered.returncode == 0, answered.stderr[-2000:]


def test_runs_spread_over_both_nodes_each_with_its_own_input(cluster: Cluster) -> None:
    with cluster.api() as api:
        ids = {
            api.post("/v1/runs", json={"agent": "echo", "input": f"n{i}"}).json()["id"]: f"n{i}"
            for i in range(12)
        }
        runs = {run_id: wait_run(api, run_id, {"succeeded", "failed"}) for run_id in ids}
        assert {r["status"] for r in runs.values()} == {"succeeded"}, runs
        for run_id, given in ids.items():
            assert api.get(f"/v1/runs/{run_id}/logs").json()["stdout"] == f"echo {given}\n"
    assert {r["node"] for r in runs.values()} == {"a", "b"}


def test_a_server_restart_leaves_the_cluster_s_work_alone(cluster: Cluster) -> None:
    with cluster.api() as api:
        run_id = api.post("/v1/runs", json={"agent": "sleeper", "env": {"SLEEP": "6"}}).json()["id"]
        running = wait_run(api, run_id, {"running"})
    pid = int((cluster.dir / "server" / "pid").read_text())
    env = dict(
        line.split("=", 1)
        for line in (Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0"))
        if "=" in line
    )
    os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    log = cluster.dir / "server" / "log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(ORCH), "server", "--port", "0", "--services-port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster.started.append(server)
    (cluster.dir / "server" / "pid").write_text(str(server.pid))
    for _ in range(300):
        said = [line for line in log.read_text().splitlines() if line.startswith("orch server on ")]
        if said:
            cluster.url = said[0].split()[3]
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the server did not start again: {log.read_text()[-2000:]}")
    with cluster.api() as api:
        done = wait_run(api, run_id, {"succeeded", "failed"})
        assert (done["status"], done["node"]) == ("succeeded", running["node"]), done
        assert api.get(f"/v1/runs/{run_id}/logs").json()["stdout"] == "start\nend\n"
        assert [n["state"] for n in api.get("/v1/nodes").json()] == ["up", "up"]


def until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
    return found


def test_a_service_runs_on_a_node_and_the_server_serves_it_and_its_output(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Deployed through the server, a service is built and run by a node, on its own Podman;
    the server proxies to it, answers for its output from the store, and its restart and
    delete reach the node."""
    (app := tmp_path / "web").mkdir()
    (app / "main.py").write_text(WEB)
    deployed = cluster.cli("service", "deploy", str(app), "--name", "web")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    status = json.loads(cluster.cli("service", "status", "web", "--json").stdout)
    auth = {"Authorization": f"Bearer {cluster.token}"}
    assert httpx.get(status["url"] + "hi", headers=auth, timeout=30).text == "web /hi\n"
    on = {node: cluster.containers(node, status["id"]) for node in ("a", "b")}
    assert sorted(len(names) for names in on.values()) == [0, 1], on  # on one node's engine
    node = next(n for n, names in on.items() if names)
    assert status["node"] == node
    # The server relays to the node's own proxy, which answers the cluster's servers only.
    with cluster.api() as api:
        proxy = next(n["proxy"] for n in api.get("/v1/nodes").json() if n["id"] == node)
    direct = httpx.get(f"http://{proxy}{urlsplit(status['url']).path}hi", headers=auth, timeout=30)
    assert direct.status_code == 401, direct.text
    assert not (cluster.dir / "server" / "logs" / "services").exists()  # nothing on the server's disk

    def logs() -> str:
        return cluster.cli("service", "logs", "web").stdout

    until(lambda: "served /hi" in logs(), f"the service's output: {logs()!r}")
    assert logs().startswith("listening\n")
    restarted = cluster.cli("service", "restart", "web")
    assert restarted.returncode == 0, restarted.stderr
    until(
        lambda: len(names := cluster.containers(node, status["id"])) == 1 and names != on[node],
        "the node did not replace the container",
    )
    until(lambda: httpx.get(status["url"], headers=auth, timeout=30).status_code == 200, "no answer")
    until(lambda: logs().count("listening\n") == 2, f"both containers' output: {logs()!r}")
    assert cluster.cli("service", "delete", "web", "--yes").returncode == 0
    until(lambda: not cluster.containers(node, status["id"]), "the node did not remove the container")


def test_a_sandbox_on_demand_is_held_by_a_node_and_driven_through_the_server(cluster: Cluster) -> None:
    with cluster.api() as api:
        # As long as the CLI and the client wait: a node's first create pulls the image first.
        resp = api.post("/v1/sandboxes", json={}, timeout=CREATE_TIMEOUT)
        assert resp.status_code == 201, resp.text
        sb = resp.json()
        assert sb["status"] == "running" and sb["node"] in ("a", "b"), sb
        url = f"/v1/sandboxes/{sb['id']}"
        done = api.post(f"{url}/exec", json={"command": ["sh", "-c", "echo hi; id -u"]})
        assert done.status_code == 200 and done.json()["stdout"] == "hi\n1000\n", done.text
        put = api.put(f"{url}/files", params={"path": "note.txt"}, content=b"from the server")
        assert put.status_code == 200, put.text
        assert api.get(f"{url}/files", params={"path": "note.txt"}).content == b"from the server"
        assert api.delete(url).status_code == 204
        assert api.get(url).json()["status"] == "removed"
        gone = api.post(f"{url}/exec", json={"command": ["true"]})
        assert gone.status_code == 409, gone.text


def node_cli(cluster: Cluster, home: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`orch node ARGS` as a machine of the cluster runs it: the cluster's settings (the
    server's), ORCH_HOME `home` in the cluster's directory, and its Podman storage if it has one."""
    pid = int((cluster.dir / "server" / "pid").read_text())
    env = dict(
        line.split("=", 1)
        for line in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        if "=" in line
    )
    env["ORCH_HOME"] = str(cluster.dir / home)
    if (conf := cluster.dir / home / "storage.conf").exists():
        env["CONTAINERS_STORAGE_CONF"] = str(conf)
    return subprocess.run([str(ORCH), "node", *args], env=env, capture_output=True, text=True, timeout=400)


def ray_head(cluster: Cluster) -> str:
    return f"127.0.0.1:{json.loads((cluster.dir / 'cluster.json').read_text())['ray_port']}"


def raylets(cluster: Cluster, name: str) -> list[int]:
    """The raylets of node `name`'s Ray nodes (their command line names its resource)."""
    return [
        pid
        for pid in marked(cluster)
        if (cmd := _cmdline(pid)).startswith(b"/")
        and b"raylet" in cmd.split(b"\0")[0]
        and f"orch_node:{name}".encode() in cmd
    ]


def test_a_second_node_of_a_name_that_is_up_is_refused(cluster: Cluster) -> None:
    """Another home's `orch node start --name b` would replace b's agent and strand its
    sandboxes: it is refused, and b works on."""
    with cluster.api() as api:
        before = {n["id"]: n for n in api.get("/v1/nodes").json()}
        refused = node_cli(cluster, "node-x", "start", "--cluster", ray_head(cluster), "--name", "b")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "A node named b is up" in refused.stderr and "Traceback" not in refused.stderr
        after = {n["id"]: n for n in api.get("/v1/nodes").json()}
        assert after["b"]["state"] == "up" and after["b"]["started_at"] == before["b"]["started_at"]
    assert len(raylets(cluster, "b")) == 1  # nothing joined Ray


def test_a_node_stops_cleanly_and_starts_again(cluster: Cluster) -> None:
    """`orch node stop b`: b is stopped (not lost) and the runs go to a; `orch node start` of
    the same home brings it back."""
    stopped = node_cli(cluster, "node-b", "stop", "b", "--cluster", ray_head(cluster))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    # How many other nodes are up comes back from b's agent, through Ray: a is.
    assert "Node b stopped: its services went to the other nodes." in stopped.stdout, stopped.stdout
    with cluster.api() as api:
        assert {n["id"]: n["state"] for n in api.get("/v1/nodes").json()} == {"a": "up", "b": "stopped"}
        run_id = api.post("/v1/runs", json={"agent": "echo", "input": "x"}).json()["id"]
        assert wait_run(api, run_id, {"succeeded", "failed"})["node"] == "a"
        again = node_cli(cluster, "node-b", "start", "--cluster", ray_head(cluster), "--name", "b", "--json")
        assert again.returncode == 0, again.stdout + again.stderr
        assert {n["id"]: n["state"] for n in api.get("/v1/nodes").json()} == {"a": "up", "b": "up"}


def test_an_environment_built_on_one_node_runs_on_the_other_after_its_builder_is_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    with cluster.api() as api:
        made = api.post(
            "/v1/environments",
            json={
                "name": "tools",
                "dockerfile": "FROM e2bdev/code-interpreter:latest\nRUN echo built > /built\n",
            },
        )
        assert made.status_code in (200, 201, 202), made.text
        deadline = time.monotonic() + 300
        while (shown := api.get("/v1/environments/tools").json())["status"] != "ready":
            assert shown["status"] in ("queued", "building"), shown
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert shown["image_digest"], shown
        (agent := tmp_path / "tooled").mkdir()
        (agent / "main.py").write_text("print(open('/built').read().strip())\n")
        (agent / "orch.yaml").write_text("name: tooled\nentrypoint: main.py\nenvironment: tools\n")
        assert cluster.cli("publish", str(agent)).returncode == 0
        # Sleepers on both nodes; then the node that built the image is killed.
        sleepers = [
            api.post("/v1/runs", json={"agent": "sleeper", "env": {"SLEEP": "120"}}).json()["id"]
            for _ in range(4)
        ]
        started = {run_id: wait_run(api, run_id, {"running"}) for run_id in sleepers}
        on = {r["node"] for r in started.values()}
        assert on == {"a", "b"}, started
        builder = _builder_node(cluster)
        other = ({"a", "b"} - {builder}).pop()
        kill_node(cluster, builder)
        for run_id, run in started.items():
            if run["node"] == builder:
                lost = wait_run(api, run_id, {"failed", "succeeded"}, timeout=60)
                assert (lost["status"], lost["reason"]) == ("failed", "node lost"), lost
        nodes = {n["id"]: n["state"] for n in api.get("/v1/nodes").json()}
        assert nodes == {builder: "lost", other: "up"}
        # The environment's image is only in the registry now, for the node that is left.
        run_id = api.post("/v1/runs", json={"agent": "tooled"}).json()["id"]
        done = wait_run(api, run_id, {"succeeded", "failed"}, timeout=180)
        logs = api.get(f"/v1/runs/{run_id}/logs").json()
        assert (done["status"], done["node"]) == ("succeeded", other), logs
        assert logs["stdout"] == "built\n" and "from the registry" in logs["log"]
        for run_id, run in started.items():
            if run["node"] == other:
                assert api.get(f"/v1/runs/{run_id}").json()["status"] == "running"  # untouched
                api.post(f"/v1/runs/{run_id}/cancel")


def _builder_node(cluster: Cluster) -> str:
    """The node whose worker built the environment (the build's `node` in the store)."""
    import psycopg

    settings = json.loads((cluster.dir / "cluster.json").read_text())
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{settings['pg_port']}/orch") as conn:
        row = conn.execute(
            "SELECT node FROM builds WHERE node IS NOT NULL ORDER BY queued_at DESC LIMIT 1"
        ).fetchone()
    assert row is not None and row[0] in ("a", "b"), row
    return str(row[0])


def _cmdline(pid: int) -> bytes:
    """A process's command line (empty once it has ended: Ray's workers come and go)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def kill_node(cluster: Cluster, name: str) -> None:
    """Kill node `name` as a machine dies: its raylet and every process of its Ray node at once."""
    found = raylets(cluster, name)  # more than one after a stop and a start again
    assert found
    children = [
        int(pid)
        for raylet in found
        for pid in subprocess.run(["pgrep", "-P", str(raylet)], capture_output=True, text=True).stdout.split()
    ]
    for pid in [*found, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
