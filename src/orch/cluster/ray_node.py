"""A machine joins a Ray cluster as an orch node (`orch node start`, docs/scale.md).

Two steps, both Ray's own:
1. `ray start --address HEAD` makes the machine a Ray node, carrying the custom resource
   `orch_node:NAME` (one unit), so that exactly this node can host NAME's agent.
2. A detached actor, `node:NAME` in Ray's namespace `orch`, is placed by that resource and runs
   the node's work (workers/nodes.py `NodeWork`) on the machine's Podman. Ray keeps it: it
   outlives the command that created it and any orch server, is started again if its process
   dies, and Ray's view of which nodes are alive tells the other nodes when a machine is gone.

A node stops (`orch node stop`) through its actor: the agent stops its work cleanly, then the
actor is ended. The machine's Ray node stays in the Ray cluster, idle (Ray's own `ray stop` on
that machine ends it).

Ray is imported only here, when a node starts or stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import ipaddress
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from orch.errors import InvalidInput, NotFound, OrchError

log = logging.getLogger(__name__)

NAMESPACE = "orch"
RESOURCE = "orch_node:"
READY_TIMEOUT = 180.0  # seconds for a node's agent to start (its first start pulls nothing)
REACH_TIMEOUT = 5.0  # seconds for the head's port to accept a connection
JOIN_TIMEOUT = 120.0  # seconds for `ray start` to join the head
TOKEN_TIMEOUT = 2.0  # seconds for the head to answer the token's probe (locally: milliseconds)
STOP_TIMEOUT = 60.0  # seconds for a node's agent to stop its work (its queue workers wait 5 s each)
_INSTALL = (
    "Install it with: pip install 'orch[cluster]' (scripts/setup --cluster does it in orch's own venv)."
)


def require_ray() -> None:
    """InvalidInput unless Ray is installed (looked for, not imported: Ray reads its settings,
    the token's among them, from the environment once, when it is imported)."""
    if importlib.util.find_spec("ray") is None:
        raise InvalidInput("A cluster node needs Ray, which is not installed here.", _INSTALL)


def loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def auth(secret_key: str) -> dict[str, str]:
    """Ray's token authentication (Ray 2.52 and later): every process of the cluster presents
    the token on every call to Ray's servers, and a call without it is refused. The token is
    derived from the cluster's ORCH_SECRET_KEY, which its server and every node have already, so
    it needs no setting of its own (docs/scale.md)."""
    token = hmac.new(secret_key.encode(), b"orch: the Ray cluster's token", hashlib.sha256).hexdigest()
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def ray_env(address: str, secret_key: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Ray's processes get on a node at `address`: the cluster's token, no usage
    reports, and for a loopback address Ray's one-machine mode, which binds 127.0.0.1 only
    (cluster/ray_start.py)."""
    env = dict(os.environ if base is None else base)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(auth(secret_key))
    if loopback(address):
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def reach(cluster: str) -> None:
    """InvalidInput unless something accepts connections at the head's HOST:PORT, found within
    seconds: Ray's own `ray start` waits two minutes for a head that is not there."""
    host, port = cluster.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT).close()
    except OSError as e:
        raise InvalidInput(
            f"Nothing answers at {cluster}, where the Ray cluster's head should be ({e.strerror or e}).",
            "Start the head there first (docs/scale.md), or pass --cluster with its HOST:PORT.",
        ) from None


def join(cluster: str, address: str, name: str, cpus: int, secret_key: str) -> None:
    """Make this machine a node of the Ray cluster at `cluster` (its head's HOST:PORT, which the
    caller found answering: `reach`), once the head took its token (`check_token`)."""
    check_token(cluster, secret_key, "could not join")
    command = [
        sys.executable,
        "-m",
        "orch.cluster.ray_start",
        "start",
        f"--address={cluster}",
        f"--node-ip-address={address}",
        f"--resources={json.dumps({RESOURCE + name: 1})}",
        f"--num-cpus={cpus}",
        "--disable-usage-stats",
    ]
    try:
        done = subprocess.run(
            command, env=ray_env(address, secret_key), capture_output=True, text=True, timeout=JOIN_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise OrchError(
            f"This machine did not join the Ray cluster at {cluster} within {JOIN_TIMEOUT:.0f} s.",
            "Check that a Ray head of the cluster answers there (`ray status --address HOST:PORT`), "
            "then run `orch node start` again.",
        ) from None
    if done.returncode != 0:
        raise refused(cluster, done.stderr + done.stdout, "could not join")


# What Ray says when the cluster's servers refuse the token a process presents.
_WRONG_TOKEN = ("InvalidAuthToken", "Unauthenticated")
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Ray's own log lines' prefixes: `[2026-12-06 12:15:03,874 W 11415 11415] file.cc:210: ` and
# `2026-12-06 12:11:52,136\tINFO scripts.py:1234 -- `.
_LOG_PREFIX = re.compile(r"^\[[^]]*\] \S+: |^\d{4}-\d\d-\d\d [\d:,]+\s+[A-Z]+ \S+ -- ")


def refused(cluster: str, output: str, did: str) -> InvalidInput:
    """Why Ray refused this machine (`ray start`'s output, or what Ray's C++ side wrote while
    connecting), in a sentence: a token the cluster does not take names the key; otherwise
    Ray's last error line, without its colour codes and log prefix, not its first INFO line."""
    if any(word in output for word in _WRONG_TOKEN):
        return InvalidInput(
            f"This machine {did} the Ray cluster at {cluster}: the cluster refused its token, so "
            "ORCH_SECRET_KEY here is not the cluster's key.",
            "Set ORCH_SECRET_KEY to the key the cluster's server and nodes use (docs/scale.md), "
            "then run it again.",
        )
    lines = [_LOG_PREFIX.sub("", _ESCAPES.sub("", line)).strip() for line in output.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if re.search(r"error|fail|refused|unable|cannot", line, re.I)]
    said = (errors or lines or ["no output"])[-1]
    return InvalidInput(
        f"This machine {did} the Ray cluster at {cluster}: {said}",
        "Check that its head runs there and is reachable (`ray status --address HOST:PORT`).",
    )


# A call of the head's GCS that every process makes first (Ray's own C++ client asks it, and
# retries for ~20 s when the token is refused); its request is empty.
_PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"


def check_token(cluster: str, secret_key: str, did: str) -> None:
    """InvalidInput, within milliseconds, when the head at `cluster` refuses the token derived
    from `secret_key` (another cluster's key): one call of its GCS with the token, as Ray's
    processes present it, before Ray's own client would retry it for ~20 s with a warning a
    line. Any other answer (taken, no answer within TOKEN_TIMEOUT, not a Ray head) leaves it to
    Ray, whose refusal is said by `refused`. Ray is not imported (it reads its settings once,
    when it is)."""
    grpc: Any = importlib.import_module("grpc")  # Ray's dependency; no type stubs

    token = auth(secret_key)["RAY_AUTH_TOKEN"]
    with grpc.insecure_channel(cluster, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            channel.unary_unary(_PROBE)(
                b"", metadata=[("authorization", f"Bearer {token}")], timeout=TOKEN_TIMEOUT
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise refused(cluster, f"Unauthenticated: {e.details()}", did) from None


def _connect(cluster: str, secret_key: str) -> Any:
    """Ray, connected to the cluster at `cluster` in orch's namespace with the cluster's token.
    What Ray's C++ side writes while it connects (a retry a line) is kept off the terminal, and
    read for why, when it fails."""
    reach(cluster)  # seconds, not Ray's retries, when nothing answers there
    check_token(cluster, secret_key, "could not reach")  # milliseconds, when it refuses the token
    env = ray_env(cluster.rsplit(":", 1)[0], secret_key)
    os.environ.update({k: v for k, v in env.items() if k.startswith("RAY_")})  # before Ray reads them
    import ray

    with tempfile.TemporaryFile() as said, _stderr_to(said):
        try:
            ray.init(address=cluster, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            said.seek(0)
            written = said.read().decode("utf-8", "replace")
            raise refused(cluster, f"{written}\n{e}", "could not reach") from None
    return ray


@contextlib.contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    """File descriptor 2 (where Ray's C++ side writes) goes to `file` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _stop(ray: Any, agent: Any) -> int | None:
    """Stop a node's agent cleanly (its work settled, services handed over, its row `stopped`),
    then end its actor for good; return how many other nodes are up. An agent that does not
    answer is only ended (None: its node is then declared lost when its heartbeat has been
    silent for LOST_AFTER)."""
    others: int | None = None
    try:
        others = int(ray.get(agent.stop.remote(), timeout=STOP_TIMEOUT))
    except ray.exceptions.RayError as e:  # gone, pending, or stuck: ending it is all that is left
        log.warning("The node's agent did not stop cleanly (%s).", type(e).__name__)
    with contextlib.suppress(Exception):
        ray.kill(agent, no_restart=True)
    return others


def start_agent(
    cluster: str, name: str, home: Path, settings: Mapping[str, str], secret_key: str
) -> dict[str, Any]:
    """Start node NAME's agent on its Ray node and return what the node says of itself once it
    works. An agent of an earlier start still there is of a node no longer up (the caller
    refused a name up elsewhere, services/nodes.py `up_elsewhere`, and stopped this home's own):
    it is stopped, cleanly if it answers, first."""
    ray = _connect(cluster, secret_key)
    try:
        actor_name = f"node:{name}"
        with contextlib.suppress(ValueError):  # none yet
            _stop(ray, ray.get_actor(actor_name, namespace=NAMESPACE))
        agent_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=4)(
            NodeAgent
        )
        agent = agent_class.options(
            name=actor_name, lifetime="detached", resources={RESOURCE + name: 1}
        ).remote(name, str(home), dict(settings))
        try:
            found: dict[str, Any] = ray.get(agent.describe.remote(), timeout=READY_TIMEOUT)
        except ray.exceptions.RayError as e:
            with contextlib.suppress(Exception):
                ray.kill(agent, no_restart=True)
            said = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise OrchError(
                f"Node {name}'s agent did not start: {said[-1] if said else type(e).__name__}",
                "Its log is in Ray's logs on this machine (/tmp/ray/session_latest/logs/, the "
                "worker's file); fix the cause and run `orch node start` again.",
            ) from None
        return found
    finally:
        ray.shutdown()


def stop_agent(cluster: str, name: str, secret_key: str) -> int | None:
    """Stop node NAME cleanly: its agent stops its work, then its actor is ended (`_stop`);
    return how many other nodes are up (None: its agent did not answer). NotFound when no
    agent of that name runs in the cluster."""
    ray = _connect(cluster, secret_key)
    try:
        try:
            agent = ray.get_actor(f"node:{name}", namespace=NAMESPACE)
        except ValueError:
            raise NotFound(
                f"No node named {name} runs in the Ray cluster at {cluster}.",
                "`orch node list` shows the cluster's nodes and their state.",
            ) from None
        return _stop(ray, agent)
    finally:
        ray.shutdown()


def alive_ray_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


class NodeAgent:
    """The actor that runs a node's work, in a process of its Ray node."""

    def __init__(self, name: str, home: str, settings: dict[str, str]) -> None:
        import ray

        from orch import config as config_mod
        from orch import log_setup
        from orch.cluster import node

        log_setup.configure()
        cfg = config_mod.load(Path(home), settings)
        ray_node = ray.get_runtime_context().get_node_id()
        address = ray.util.get_node_ip_address()
        self.work = node.start(cfg, name, address, ray_node, alive=alive_ray_nodes)

    def describe(self) -> dict[str, Any]:
        from orch.cluster import node

        return node.describe(self.work)

    def stop(self) -> int:
        return self.work.stop()
