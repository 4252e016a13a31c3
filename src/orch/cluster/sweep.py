"""Remove what a node of this machine left: its sandboxes (their runtimes' state, network
namespaces, cgroups) and its Podman containers, found by its platform's names and labels
(ORCH_HOME and CONTAINERS_STORAGE_CONF say which node). `scripts/cluster-down` runs it for each
node after stopping Ray, since a node killed mid-run leaves its sandboxes running.

    ORCH_HOME=NODE_HOME python -m orch.cluster.sweep NODE_NAME
"""

from __future__ import annotations

import sys

from orch import config as config_mod
from orch.engine import PodmanEngine
from orch.sandbox import runc
from orch.services.platform import Platform
from orch.store import Store


def main(node: str) -> None:
    cfg = config_mod.load()
    platform = Platform(cfg, Store("sqlite://"), PodmanEngine(), node=node)
    platform.engine.remove_containers({"org.orch.instance": platform.instance})
    runc.sweep(platform.container_prefix)
    platform.engine.remove_leftovers(platform.container_prefix)


if __name__ == "__main__":
    main(sys.argv[1])
