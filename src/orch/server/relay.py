"""Requests relayed to a cluster's node (docs/scale.md#services-across-machines): a service's
containers are on the bridge of the machine that runs them, which no other machine reaches, so a
cluster's server sends a request for a service held by a node to that node's services proxy
(server/node_proxy.py), which sends it on to the container. Calls to a sandbox on demand go to the
node that holds it the same way (server/sandbox_relay.py).

The node's proxy serves the cluster's servers only: each relayed request carries a token derived
from the cluster's secret key (ORCH_SECRET_KEY, which the server and every node share), and the
replica the server picked. The workspace's token was checked by the server; neither it nor these
headers reach the service (server/proxy_headers.py passes none of them on)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import quote

from orch.config import Config
from orch.secret import box
from orch.services import deployed
from orch.services.routing import Backend, Route

TOKEN_HEADER = b"orch-relay-token"
REPLICA_HEADER = b"orch-replica"
WORKSPACE_HEADER = b"orch-workspace"  # a relayed API call's: the workspace its server checked
_PURPOSE = b"orch: a node's services proxy"


def token(config: Config) -> str:
    """The cluster's relay token: an HMAC-SHA256 of a fixed purpose under the secret key."""
    return hmac.new(box.load(config).key, _PURPOSE, "sha256").hexdigest()


def accepted(given: bytes | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given, expected.encode())


@dataclass(frozen=True)
class Upstream:
    """Where a request for a backend goes: HOST, PORT, the request target, extra headers."""

    host: str
    port: int
    target: str
    headers: tuple[tuple[bytes, bytes], ...]


def upstream(route: Route, backend: Backend, target: str, relay_token: str | None) -> Upstream:
    """The container itself, or (a `relay` backend) its node's proxy with the relay headers;
    `target` is the path (and query) the service gets."""
    if backend.relay is None:
        return Upstream(backend.address, deployed.PORT, target, ())
    host, _, port = backend.relay.rpartition(":")
    prefix = f"/services/{quote(route.workspace, safe='')}/{quote(route.name, safe='')}"
    headers = ((TOKEN_HEADER, (relay_token or "").encode()), (REPLICA_HEADER, backend.container.encode()))
    return Upstream(host.strip("[]"), int(port), prefix + target, headers)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
