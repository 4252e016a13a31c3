"""The reverse proxy in front of services: /services/WORKSPACE/NAME/PATH streams the request to
the service's container (over Podman's bridge, by its address) and the answer back. Services
have no port on any host interface; this is their one way in, and it needs a workspace token."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from orch import metrics
from orch.errors import OrchError, ServiceUnavailable
from orch.server.api.deps import PlatformDep, ProxyWorkspaceDep
from orch.services import deployed
from orch.services.platform import Platform

router = APIRouter(tags=["services"])

# httpx logs each request at INFO; for a proxy that is a line (and a cost) per request served.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Hop-by-hop headers (RFC 9110 §7.6.1) and ours: never passed on. The token stays with the server.
_DROP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
}
# The web UI's sign-in cookie (server/api/deps.py) is the platform's, not the service's.
_TOKEN_COOKIE = "orch_token"  # noqa: S105 - a cookie name, not a secret
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# The path arrives decoded; encoded again (all but these), a NUL or a literal '%' in it reaches the
# service as the client sent it (httpx refuses a raw NUL in a URL).
_PATH_SAFE = "/:@!$&'()*+,;=~"


def client(request: Request) -> httpx.AsyncClient:
    found: httpx.AsyncClient | None = getattr(request.app.state, "service_proxy", None)
    if found is None:
        found = httpx.AsyncClient(
            timeout=httpx.Timeout(300.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
            trust_env=False,  # the service is on the local bridge: never through an egress proxy
        )
        request.app.state.service_proxy = found
    return found


@router.api_route("/services/{workspace}/{name}", methods=METHODS, include_in_schema=False)
@router.api_route("/services/{workspace}/{name}/{path:path}", methods=METHODS, include_in_schema=False)
async def proxy(
    workspace: str, name: str, request: Request, platform: PlatformDep, ws: ProxyWorkspaceDep, path: str = ""
) -> StreamingResponse:
    """Forward the request to the service and stream its answer back."""
    started = time.perf_counter()
    status = 500  # what the app answers if forwarding fails in an unforeseen way
    try:
        answer = await _forward(workspace, name, request, platform, ws, path)
        status = answer.status_code
        return answer
    except OrchError as e:  # no such service, not running, did not answer
        status = e.http_status
        raise
    except asyncio.CancelledError:  # the client went away first: nginx's 499, not a server error
        status = 499
        raise
    finally:
        metrics.of(platform).proxy_request(status, time.perf_counter() - started)


async def _forward(
    workspace: str, name: str, request: Request, platform: Platform, ws: str, path: str
) -> StreamingResponse:
    base = await run_in_threadpool(deployed.proxy_target, platform, ws, workspace, name)
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP | {"cookie"}]
    cookies = [c for c in request.headers.get("cookie", "").split(";") if c.strip()]
    kept = [c.strip() for c in cookies if c.strip().split("=", 1)[0] != _TOKEN_COOKIE]
    if kept:
        headers.append(("cookie", "; ".join(kept)))
    headers.append(("x-forwarded-prefix", f"/services/{workspace}/{name}"))
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    upstream_request = client(request).build_request(
        request.method,
        f"{base}/{quote(path, safe=_PATH_SAFE)}" + (f"?{request.url.query}" if request.url.query else ""),
        headers=headers,
        content=request.stream() if has_body else None,
    )
    try:
        upstream = await client(request).send(upstream_request, stream=True)
    except httpx.TransportError as e:
        raise ServiceUnavailable(
            f"The service {name} did not answer ({type(e).__name__}).", deployed.SEE_STATUS_AND_LOGS
        ) from None
    answer_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=answer_headers,
        background=BackgroundTask(upstream.aclose),
    )


async def close(app_state: object) -> None:
    found = getattr(app_state, "service_proxy", None)
    if found is not None:
        await found.aclose()
