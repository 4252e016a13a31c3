"""Reading an uploaded bundle from a request body, bounded while it streams in."""

from __future__ import annotations

from fastapi import Request

from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_UPLOAD_BYTES
from orch.errors import InvalidInput
from orch.server import body_limit


async def read_bundle_upload(request: Request) -> bytes:
    """The request's body: a bundle no larger than a bundle within the bounds packs to (checked
    while reading; what it unpacks to is checked as it is read)."""
    body_limit.streamed(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise upload_too_large()
    if not body:
        raise InvalidInput("The request has no bundle.", "Send the bundle (a .tar.gz) as the request body.")
    return bytes(body)


def upload_too_large() -> InvalidInput:
    """A packed bundle larger than one within the bounds packs to (MAX_UPLOAD_BYTES)."""
    return InvalidInput(
        f"The upload is larger than a bundle of {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB of files packs to.",
        "Leave large files out with .orchignore and download them at run time.",
    )
