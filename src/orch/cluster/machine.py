"""The platform of this machine: its store, its Podman, and the OCI runtimes that start runs'
sandboxes. A server and a cluster node are each built on one."""

from __future__ import annotations

from orch.config import Config
from orch.engine import PodmanEngine
from orch.sandbox import runc
from orch.services.platform import Platform
from orch.store import Store


def platform(cfg: Config, node: str | None = None) -> Platform:
    """This machine's platform for `cfg` (working as cluster node `node`, if given). Sandboxes'
    networks and isolation rules are prepared now: a machine that cannot have them says so at
    its start, not at its first run."""
    found = Platform(cfg, Store(cfg.database_url), PodmanEngine(), node=node)
    # Runs' sandboxes start through the OCI runtime itself; Podman builds and runs services.
    found.launchers = dict(runc.launchers(found.container_prefix, int(cfg.warm_sandboxes)))
    found.engine.prepare()
    return found
