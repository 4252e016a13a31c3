"""An orch node (docs/scale.md): this machine's platform working as a node of the cluster, what
it needs from its settings, and what it says of itself."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

from orch.cluster import machine
from orch.config import Config, capacity, make_home, memory
from orch.engine import PodmanEngine
from orch.errors import Conflict, InvalidInput
from orch.server.node_proxy import NodeProxy
from orch.services import environments as envs
from orch.services import nodes
from orch.services import secrets as workspace_secrets
from orch.services.nodes import Joining
from orch.services.platform import Platform
from orch.store import Store
from orch.store.db import check_url, dialect
from orch.workers.nodes import NodeWork


def check(cfg: Config) -> None:
    """What a node needs that one machine does not: the shared store, the registry images travel
    through, and the key the workspace's secrets are encrypted with."""
    try:  # postgres:// too: PostgreSQL, as the server's store reads it
        shared = dialect(cfg.database_url) == "postgresql"
    except InvalidInput:  # a database orch keeps no store in: the node's fix says what to set
        shared = False
    if not shared:
        raise InvalidInput(
            "A cluster node works from the cluster's shared store, and ORCH_DATABASE_URL is not a "
            "PostgreSQL URL.",
            "Set ORCH_DATABASE_URL to the PostgreSQL URL the cluster's server uses.",
        )
    if not cfg.registry:
        raise InvalidInput(
            "A cluster node pulls the images other nodes built from a registry, and none is set.",
            "Set ORCH_REGISTRY (and ORCH_REGISTRY_TLS_VERIFY) as the cluster's server has them.",
        )
    if not cfg.values.get("secret_key"):
        raise InvalidInput(
            "A cluster node decrypts the workspace's secrets for its runs, and ORCH_SECRET_KEY is not set.",
            "Set ORCH_SECRET_KEY to the cluster's key, the same on its server and every node.",
        )


def check_name(cfg: Config, name: str) -> bool:
    """Whether node `name` of this ORCH_HOME is up (starting it again restarts it: the caller
    stops it first). Conflict when a node of that name is up with another ORCH_HOME or on
    another machine: starting this one would replace its agent and strand its open sandboxes."""
    check_url(cfg.database_url)  # said as a server's start says it: an option, a store that is not there
    platform = Platform(cfg, Store(cfg.database_url), PodmanEngine(), node=name)
    try:
        platform.store.migrate()
        other = nodes.up_elsewhere(platform)
        mine = any(n.id == name and n.state == nodes.UP for n in nodes.list_nodes(platform))
    finally:
        platform.store.dispose()
    if other is not None:
        raise Conflict(
            f"A node named {name} is up at {other.address}, since {other.started_at:%Y-%m-%d %H:%M:%S} "
            "UTC, with another ORCH_HOME or on another machine.",
            f"Pick another name with --name, or stop that node first (`orch node stop {name} "
            "--cluster HOST:PORT`).",
        )
    return mine


def start(
    cfg: Config, name: str, address: str, ray_node: str | None, alive: Callable[[], Collection[str]] | None
) -> NodeWork:
    """Register this machine as node `name` and start its work."""
    check(cfg)
    make_home(cfg.home)
    platform = machine.platform(cfg, node=name)
    platform.store.migrate()
    envs.seed_builtins(platform)
    workspace_secrets.prepare(platform)
    proxy = NodeProxy(platform, address, int(cfg.values.get("node_proxy_port") or 0))
    me = Joining(
        id=name,
        address=address,
        cpus=os.cpu_count() or 1,
        memory=memory(),
        slots=int(cfg.values.get("run_workers") or capacity()),
        ray_node=ray_node,
        proxy=proxy.address,
        memory_budget=platform.run_memory.total,
    )
    work = NodeWork(platform, me, alive=alive, proxy=proxy)
    work.start()
    return work


def describe(work: NodeWork) -> dict[str, Any]:
    """The node as `orch node list --json` shows it."""
    for view in nodes.list_nodes(work.platform):
        if view.id == work.me.id:
            return view.model_dump(mode="json")
    raise LookupError(work.me.id)
