"""/v1/nodes: the machines of a cluster (docs/scale.md), for any workspace's token: what runs the
work, never what the work is."""

from __future__ import annotations

from orch.server.api.deps import PlatformDep, WorkspaceDep, api_router
from orch.services import nodes
from orch.services.views import NodeView

router = api_router("nodes")


@router.get("/nodes", response_model=list[NodeView])
def list_nodes(platform: PlatformDep, _ws: WorkspaceDep) -> list[NodeView]:
    """The cluster's nodes: id, address, state (up, stopped or lost), capacity {cpus, memory,
    slots}, and how many runs and builds each has in flight. Empty on one machine."""
    return nodes.list_nodes(platform)
