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

    python -m orch.cluster.ray_start start --head --node-ip-address 127.0.0.1 --port 6379
    python -m orch.cluster.ray_start start --address HEAD --node-ip-address 127.0.0.1 ...
"""

from __future__ import annotations

import os
import sys


def _address(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--node-ip-address="):
            return arg.split("=", 1)[1]
        if arg == "--node-ip-address" and i + 1 < len(argv):
            return argv[i + 1]
    return None


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
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *argv]
    ray_main()


if __name__ == "__main__":
    main(sys.argv[1:])
