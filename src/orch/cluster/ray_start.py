"""`ray start` for a node whose address is a loopback one (a local cluster, docs/scale.md).

Ray 2.60 binds its servers to every interface unless the node's address is 127.0.0.1, and it
does not let a node keep that address: `ray start --node-ip-address 127.0.0.1` replaces it with
the machine's own (`resolve_ip_for_localhost`). Its one-machine mode
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) keeps every process on 127.0.0.1, but refuses a second
node. This runs Ray's own `ray start` with that mode in its environment and the two checks
answered for a loopback address: the node then listens on 127.0.0.1 only, as its head does.

    python -m orch.cluster.ray_start start --address HEAD --node-ip-address 127.0.0.1 ...
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    import ray._private.ray_constants as constants
    import ray._private.services as services
    from ray.scripts.scripts import main as ray_main

    constants.ENABLE_RAY_CLUSTER = True  # a second node may join
    services.node_ip_address_from_perspective = lambda *_a, **_k: "127.0.0.1"
    sys.argv = ["ray", *argv]
    ray_main()


if __name__ == "__main__":
    main(sys.argv[1:])
