"""`orch node`: machines of a cluster (docs/scale.md). `start` joins this machine to a Ray
cluster as an orch node that runs builds, runs and services on its own Podman; `stop` stops a
node cleanly; `list` shows the cluster's nodes as its server knows them."""

from __future__ import annotations

import contextlib
import os
import re
import socket

import typer

from orch.cli.output import command, console, ok, print_json
from orch.cli.utils import JSON, plain_table
from orch.client.transport import Transport, listed
from orch.errors import InvalidInput, NotFound

app = typer.Typer(
    help="Machines of a cluster: join one as a node, stop one, list them.", no_args_is_help=True
)

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ADDRESS = re.compile(r"(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")
_CLUSTER = typer.Option(..., "--cluster", metavar="HOST:PORT", help="The Ray cluster's head, as HOST:PORT.")


def _cluster(cluster: str) -> str:
    """The head's HOST:PORT, checked: a port out of range is said now, not after Ray's wait."""
    found = _ADDRESS.fullmatch(cluster)
    if found is None or not 1 <= int(found["port"]) <= 65535:
        raise InvalidInput(
            f"--cluster {cluster!r} is not HOST:PORT with a port from 1 to 65535.",
            "Pass the Ray head's address, e.g. 10.0.0.5:6379.",
        )
    return cluster


def _name(name: str | None, given_as: str) -> str:
    """The node's name: given (as `given_as`, how the command takes it), or, left out, this
    machine's host name. An empty one is refused like any bad name: it is typically an unset
    shell variable, not a wish for the host name."""
    if name is None:
        name = socket.gethostname().split(".")[0].lower()
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{name!r} is not a node name.",
            f"Pass {given_as} with lowercase letters, digits and dashes (at most 63).",
        )
    return name


_ADDRESS_FIX = (
    "Pass --address an address of this machine that the cluster's other machines reach it at "
    "(`hostname -I` lists them), or leave it out."
)


def _address(address: str) -> str:
    """--address, checked: one of this machine's addresses (its Ray processes and its node's
    proxy listen there), said now, not as what `ray start` fails with."""
    host = address.strip("[]")
    try:
        family, _, _, _, where = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0]
    except (OSError, ValueError):  # gaierror; or a name no resolver takes (too long, a NUL)
        raise InvalidInput(
            f"--address {address!r} is not an address of this machine: it is neither an IP address nor a "
            "host name known here.",
            _ADDRESS_FIX,
        ) from None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((where[0], 0))
    except OSError as e:
        raise InvalidInput(
            f"--address {address} is not an address of this machine ({e.strerror or e}).", _ADDRESS_FIX
        ) from None
    return address


def _default_address(head_host: str) -> str:
    """The head's host when it is a loopback address (a local cluster stays on 127.0.0.1), else
    what this machine's host name resolves to."""
    from orch.cluster import ray_node

    if ray_node.loopback(head_host):
        return head_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        raise InvalidInput(
            f"This machine's host name {socket.gethostname()!r} has no address known here.",
            "Pass --address an address of this machine that the cluster's other machines reach it at "
            "(`hostname -I` lists them).",
        ) from None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


@app.command("start")
@command
def start(
    cluster: str = _CLUSTER,
    name: str = typer.Option(
        None, "--name", help="The node's name in the cluster \\[default: this machine's host name]."
    ),
    address: str = typer.Option(
        None,
        "--address",
        help="The address other machines reach this one at \\[default: the head's host when it is "
        "a loopback address, so a local cluster stays on 127.0.0.1].",
    ),
    json_: bool = JSON,
) -> None:
    """Join this machine to the cluster as an orch node.

    Its settings (ORCH_DATABASE_URL, ORCH_HOME, ...) are the node's.
    The node keeps working inside Ray after this returns, until `orch node stop`.
    A name that is up elsewhere is refused; this home's own node is restarted."""
    from orch import config as config_mod
    from orch.cluster import node, ray_node

    cluster, name = _cluster(cluster), _name(name, "--name")
    address = _address(address) if address else _default_address(cluster.rsplit(":", 1)[0].strip("[]"))
    ray_node.require_ray()
    cfg = config_mod.load()
    node.check(cfg)
    if port := int(cfg.values.get("node_proxy_port") or 0):  # taken: said now, not inside Ray
        from orch.server.main import bind

        bind(address, port, "ORCH_NODE_PROXY_PORT").close()
    secret_key = str(cfg.values["secret_key"])
    ray_node.reach(cluster)
    if node.check_name(cfg, name):  # this home's node, up: a restart, which stops it first
        with contextlib.suppress(NotFound):  # its agent is gone already
            ray_node.stop_agent(cluster, name, secret_key)
    ray_node.join(cluster, address, name, os.cpu_count() or 1, secret_key)
    settings = {k: v for k, v in os.environ.items() if k.startswith("ORCH_")}
    found = ray_node.start_agent(cluster, name, cfg.home, settings, secret_key)
    if json_:
        print_json(found)
        return
    cap = found["capacity"]
    ok(
        f"Node {found['id']} joined the cluster at {cluster}: {cap['slots']} sandboxes at once, "
        f"{cap['cpus']} CPUs, {_gib(cap['memory'])} of memory."
    )


@app.command("stop")
@command
def stop(
    name: str = typer.Argument(None, help="The node to stop \\[default: this machine's host name]."),
    cluster: str = _CLUSTER,
) -> None:
    """Stop a node cleanly, through the cluster.

    Its services move to other nodes at once (with none up, they wait for one).
    Its started runs fail (`node stopped`).
    Runs not started yet, and its builds, are queued again for another node.
    Its open sandboxes end. Its machine's Ray node stays (`ray stop` ends it).
    Run it on a machine of the cluster, with the cluster's ORCH_SECRET_KEY."""
    from orch import config as config_mod
    from orch.cluster import ray_node

    cluster, name = _cluster(cluster), _name(name, "a NAME")
    ray_node.require_ray()
    cfg = config_mod.load()
    secret_key = cfg.values.get("secret_key")
    if not secret_key:
        raise InvalidInput(
            "Stopping a node goes through the cluster's Ray, whose token comes from "
            "ORCH_SECRET_KEY, and it is not set.",
            "Set ORCH_SECRET_KEY to the cluster's key, the same on its server and every node.",
        )
    ray_node.reach(cluster)
    others = ray_node.stop_agent(cluster, name, str(secret_key))
    if others is None:
        ok(
            f"Node {name} stopped; its agent did not answer, so its work is settled when the cluster "
            "declares it lost (within 10 s)."
        )
    elif others:
        ok(f"Node {name} stopped: its services went to the other nodes.")
    else:
        ok(
            f"Node {name} stopped. No other node is up: its services, and the runs and builds queued, "
            f"wait until one is (`orch node start --cluster {cluster}`)."
        )


@app.command("list")
@command
def list_(json_: bool = JSON) -> None:
    """List the cluster's nodes: their state, capacity and what they run now."""
    answer = Transport.from_settings().send("GET", "/v1/nodes")
    found = listed(answer.json())
    if json_:
        print_json(found)
        return
    cluster = answer.headers.get("orch-work") == "cluster"
    if not found and cluster:
        console.print(
            "No nodes: this server's runs, builds and services wait until a node of its cluster is "
            "up. Join one with `orch node start --cluster HOST:PORT` (its ORCH_CLUSTER).",
            markup=False,
        )
        return
    if not found:
        console.print(
            "No nodes: this server runs its work on its own machine. Join one with "
            "`orch node start --cluster HOST:PORT`.",
            markup=False,
        )
        return
    table = plain_table()
    for col in ("ID", "ADDRESS", "STATE", "CPUS", "MEMORY", "SLOTS", "RUNNING", "SEEN"):
        table.add_column(col, key=col != "SEEN")
    for n in found:
        cap = n["capacity"]
        table.add_row(
            n["id"],
            n["address"],
            n["state"],
            str(cap["cpus"]),
            _gib(cap["memory"]),
            str(cap["slots"]),
            str(n["running"]),
            n["seen_at"][:19],
        )
    console.print(table)
    if cluster and not any(n["state"] == "up" for n in found):  # stopped or lost: the usual way to have none
        console.print(
            "No node is up: this server's runs, builds and services wait until one is. Start one with "
            "`orch node start --cluster HOST:PORT` (its ORCH_CLUSTER).",
            markup=False,
        )
