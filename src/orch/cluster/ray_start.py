"""`ray start` for an orch cluster: Ray's own command, with the cluster's token, and on a
loopback address bound to 127.0.0.1 only (docs/scale.md).

- **The token.** With ORCH_SECRET_KEY in the environment (the cluster's key) and no token
  given, Ray's token authentication is turned on with the token derived from it
  (cluster/ray_node.py `auth`): the head started this way refuses every call without it, and
  the nodes (`orch node start`) present it.
- **Loopback.** Ray 2.60 binds its servers to every interface unless the node's address is
  127.0.0.1, and it does not let a node keep that address: `ray start --node-ip-address
  127.0.0.1` replaces it with the machine's own (`resolve_ip_for_localhost`). Its one-machine
  mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) keeps every process on 127.0.0.1, but refuses a
  second node. For a loopback `--node-ip-address`, this runs Ray's `ray start` with that mode
  in its environment and the two checks answered for it: the node then listens on 127.0.0.1
  only, as its head does.
- **No fixed ports.** Ray fixes some of its ports whatever else runs on the machine (the ray
  client server 10001 and the dashboard 8265 on a head, every node's dashboard agent 52365,
  the dashboard's metrics 44227, workers within 10002-19999), so a second Ray or local cluster on
  the machine collides with it (`Agent port #52365 failed to bind`). Each of those not given on
  the command line is a port free on the node's address when it starts (workers' ports are the
  system's free ones); Ray already picks the others (its GCS's given, raylet's, object
  manager's, agents' gRPC, runtime env agent's, metrics export) free itself.

    python -m orch.cluster.ray_start start --head --node-ip-address 127.0.0.1 --port 6379
    python -m orch.cluster.ray_start start --address HEAD --node-ip-address 127.0.0.1 ...
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Collection
from contextlib import ExitStack

# Ray's flags whose default is a fixed port: picked free at start unless given.
HEAD_PORTS = ("--ray-client-server-port", "--dashboard-port")
NODE_PORTS = ("--dashboard-agent-listen-port",)


def _address(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--node-ip-address="):
            return arg.split("=", 1)[1]
        if arg == "--node-ip-address" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _given(argv: list[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def free_port(address: str | None, avoid: Collection[int] = ()) -> int:
    """A port free on `address` (every interface: None) now, none of `avoid`; Ray binds it a
    moment later."""
    return distinct_free_ports(address, 1, avoid)[0]


def distinct_free_ports(address: str | None, n: int, avoid: Collection[int] = ()) -> list[int]:
    """`n` ports free on `address` now, all different and none of `avoid` (the ports the
    command line gives already): each is held bound until all are picked, so the system cannot
    hand out one twice (a head whose dashboard agent was given its GCS's port failed to start)."""
    family = socket.AF_INET6 if address and ":" in address else socket.AF_INET
    picked: list[int] = []
    with ExitStack() as held:
        for _ in range(n + len(avoid) + 8):  # the system skips a bound port: a few tries suffice
            if len(picked) == n:
                break
            s = held.enter_context(socket.socket(family))
            s.bind((address or "", 0))
            port = int(s.getsockname()[1])
            if port not in avoid and port not in picked:
                picked.append(port)
    if len(picked) < n:
        raise OSError(f"no {n} free ports on {address or 'this machine'}")
    return picked


def given_ports(argv: list[str]) -> set[int]:
    """The ports `argv` gives Ray (`--port=6379`, `--dashboard-port 8265`, ...)."""
    ports = set()
    for i, arg in enumerate(argv):
        flag, sep, value = arg.partition("=")
        if not flag.startswith("--") or not flag.endswith("port"):
            continue
        if not sep and i + 1 < len(argv):
            value = argv[i + 1]
        if value.isdigit():
            ports.add(int(value))
    return ports


def free_ports(argv: list[str]) -> list[str]:
    """`argv` of a `start`, with a free port for each of Ray's fixed ones it does not give."""
    if not argv or argv[0] != "start":
        return argv
    address = _address(argv)
    flags = [f for f in (*NODE_PORTS, *(HEAD_PORTS if "--head" in argv else ())) if not _given(argv, f)]
    ports = distinct_free_ports(address, len(flags), given_ports(argv))
    added = [f"{flag}={port}" for flag, port in zip(flags, ports, strict=True)]
    if not _given(argv, "--min-worker-port") and not _given(argv, "--worker-port-list"):
        added += ["--min-worker-port=0", "--max-worker-port=0"]  # 0: the system's free ports
    return [*argv, *added]


def main(argv: list[str]) -> None:
    from orch.cluster.ray_node import auth, loopback

    secret_key = os.environ.get("ORCH_SECRET_KEY")
    if secret_key and not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.update(auth(secret_key))
    address = _address(argv)
    if address is not None and loopback(address):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray reads it
        import ray._private.ray_constants as constants
        import ray._private.services as services

        constants.ENABLE_RAY_CLUSTER = True  # a second node may join
        services.node_ip_address_from_perspective = lambda *_a, **_k: "127.0.0.1"
    argv = free_ports(argv)
    if argv[:1] == ["start"] and "DASHBOARD_METRIC_PORT" not in os.environ:  # read by Ray's dashboard
        os.environ["DASHBOARD_METRIC_PORT"] = str(free_port(address, given_ports(argv)))
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *argv]
    ray_main()


if __name__ == "__main__":
    main(sys.argv[1:])
