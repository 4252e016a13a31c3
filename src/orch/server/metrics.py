"""GET /metrics: the platform's metrics in Prometheus' text format (orch/metrics.py, docs/metrics.md).

Readable without a workspace token: a scraper has none, and the figures are platform-wide counts
with no workspace, agent or service in them. The server listens on 127.0.0.1 unless told
otherwise, so by default only the machine reads them; a server exposed further can require a
secret of its own for them (the `metrics_token` setting, sent as `Authorization: Bearer ...`),
which opens nothing else (a workspace token given to the scraper would open its workspace).

Not in the OpenAPI document: it is not part of the API a client programs against (and
schemathesis calls every operation the document declares).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, FastAPI, Request, Response

from orch import metrics
from orch.errors import Unauthorized
from orch.server.api.deps import PlatformDep
from orch.services.platform import Platform

router = APIRouter()


def install(app: FastAPI, platform: Platform) -> None:
    """Serve /metrics, and make the platform's metrics now: prometheus_client's import (~0.1 s)
    then happens at start, not in the first proxied request, on the event loop."""
    metrics.of(platform)
    app.include_router(router)


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request, platform: PlatformDep) -> Response:
    """Every metric, the store's counts read now (a plain def: the query runs in the thread pool)."""
    _check_token(request, str(platform.config.metrics_token))
    return Response(metrics.of(platform).render(), media_type=metrics.CONTENT_TYPE)


def _check_token(request: Request, expected: str) -> None:
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Compared in constant time: the answer must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized(
            "/metrics needs the metrics token (this server sets metrics_token).",
            "Send it as 'Authorization: Bearer TOKEN' (Prometheus: the scrape job's authorization).",
        )
