"""HEAD answered wherever GET is (RFC 9110, 9.3.2): uptime checkers send HEAD to /healthz.

FastAPI routes a GET route for GET alone (HEAD got 405). Here a HEAD request goes to the app as
a GET, and its answer goes back with the GET's status and headers (its Content-Length too) and
no body. A route that takes no GET refuses HEAD as it refuses GET (405, the message naming HEAD).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ASKED = "orch.method"  # the scope's key: the method the client sent, when it was HEAD


class HeadAsGet:
    """ASGI middleware: HEAD is served as GET, without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        scope = {**scope, "method": "GET", ASKED: "HEAD"}

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, without_body)
