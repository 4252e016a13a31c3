"""/v1/nodes: the machines of a cluster (docs/scale.md), for any workspace's token: what runs the
work, never what the work is."""

from __future__ import annotations

from fastapi import Response

from orch.server.api.deps import PlatformDep, WorkspaceDep, api_router
from orch.services import nodes
from orch.services.views import NodeView

router = api_router("nodes")


@router.get("/nodes", response_model=list[NodeView])
def list_nodes(platform: PlatformDep, _ws: WorkspaceDep, response: Response) -> list[NodeView]:
    """The cluster's nodes: id, address, state (up, stopped or lost), capacity {cpus, memory,
    slots}, and how many runs and builds each has in flight. Empty on one machine. The header
    `Orch-Work` says where the server's work runs: `cluster` (on its nodes), or `server` (on
    its own machine), so that an empty list of a cluster's server reads as what it is."""
    response.headers[WORK_HEADER] = "server" if platform.runs_work else "cluster"
    return nodes.list_nodes(platform)


WORK_HEADER = "Orch-Work"
