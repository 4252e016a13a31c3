"""Reading an uploaded bundle from a request body, bounded while it streams in."""

from __future__ import annotations

from fastapi import Request

from orch.bundle import MAX_BUNDLE_BYTES
from orch.errors import InvalidInput
from orch.server import body_limit


async def read_bundle_upload(request: Request) -> bytes:
    """The request's body: a bundle no larger than what it may unpack to (checked while reading)."""
    body_limit.streamed(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BUNDLE_BYTES:
            raise InvalidInput(
                f"The upload is over the {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB limit.",
                "Leave large files out with .orchignore and download them at run time.",
            )
    if not body:
        raise InvalidInput("The request has no bundle.", "Send the bundle (a .tar.gz) as the request body.")
    return bytes(body)
