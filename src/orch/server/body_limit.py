"""A bound on every request body the server reads (docs/architecture.md#request-bodies).

A route that takes JSON (or a web UI form) has its body read whole, and parsed, before its
endpoint runs: without a bound, one request could make the server hold gigabytes. Every body is
bounded at `request_body_limit` (8 MiB by default, ORCH_REQUEST_BODY_LIMIT), far above the
largest one orch's clients send. A body announced larger (`Content-Length`) is refused before a
byte of it is read, one sent in chunks as soon as it passes the bound: HTTP 413, as orch's
`{error, message, fix}`. A route that streams an upload (a bundle, a sandbox file) says so with
`streamed` before it reads: it bounds the body itself, as it comes, with its own sentence.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orch.errors import TooLarge

_BOUND = "orch.body_limit"  # the scope's key: the bound of this request's body, in bytes


def streamed(request: Request) -> None:
    """This request's body is an upload its route reads as a stream and bounds itself, chunk by
    chunk (call it before reading): the server's bound for JSON does not hold for it."""
    request.scope[_BOUND] = None


def too_large(most: int) -> TooLarge:
    return TooLarge(
        f"The request body is larger than the {_size(most)} the server reads for this route.",
        "Send a smaller body; large data goes in a bundle or a file upload, not in JSON.",
    )


def _size(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n:,} bytes"


class BodyLimit:
    """ASGI middleware: a request's body is read only up to its bound; past it, reading raises
    TooLarge (which the app answers as 413)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_BOUND] = self.limit
        announced = _content_length(scope)
        read = 0

        async def bounded() -> Message:
            nonlocal read
            most: int | None = scope[_BOUND]
            if most is None:
                return await receive()
            if announced is not None and announced > most:
                raise too_large(most)  # before a byte of it is read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > most:
                    raise too_large(most)
            return message

        await self.app(scope, bounded, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP layer refuses a malformed length before any app sees it
    return None
