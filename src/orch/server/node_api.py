"""What a cluster's node answers its servers besides services (docs/scale.md): the calls to the
sandboxes on demand it holds, relayed by a server (server/sandbox_relay.py) with the cluster's
relay token and the workspace that server checked. The node answers them with the server's own
routes (server/api/sandboxes.py) on its own platform. It also serves the node's own metrics at
/metrics (server/metrics.py, the same ORCH_METRICS_TOKEN rule): its runs, builds, deployments
and sandboxes are counted in its process, which no server's /metrics sees (docs/metrics.md)."""

from __future__ import annotations

from fastapi import FastAPI, Request

from orch.errors import Unauthorized
from orch.server import metrics, relay
from orch.server.api import deps, sandboxes
from orch.server.app import install_errors
from orch.services.platform import Platform


def create(platform: Platform) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.platform = platform
    app.include_router(sandboxes.router)
    token = relay.token(platform.config)

    def relayed_workspace(request: Request) -> str:
        """The workspace the relaying server checked; only the cluster's servers may say it."""
        if not relay.accepted(request.headers.get("orch-relay-token", "").encode() or None, token):
            raise Unauthorized(
                "This address serves a cluster node's sandboxes to the cluster's servers only.",
                "Call the API of the cluster's server.",
            )
        workspace = request.headers.get(relay.WORKSPACE_HEADER.decode(), "")
        if not workspace:
            raise Unauthorized("A relayed call names no workspace.", "Call the API of the cluster's server.")
        deps.refuse_nul(request)
        return workspace

    app.dependency_overrides[deps.api_workspace_id] = relayed_workspace
    metrics.install(app, platform)
    install_errors(app)
    return app
