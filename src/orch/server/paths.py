"""API paths whose segments hide a '/': refused before routing.

The ASGI server hands the app the path with its escapes decoded, so `/v1/agents/a%2Fversions%2F1`
reaches the router as `/v1/agents/a/versions/1`, another route with other parameters. No name
or id holds a '/', so a request whose path segment does is refused with a sentence, as bad input,
instead of being answered as the request it was not. The services' proxy is not behind this: a
service's own paths are its own business.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Receive, Scope, Send

_ENCODED_SLASH = re.compile(rb"%2f|%5c", re.IGNORECASE)


class EncodedSeparators:
    """ASGI middleware: 400 for an API path (/v1/...) with an escaped '/' or '\\' in it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or b""
        if scope["type"] == "http" and raw.startswith(b"/v1/") and _ENCODED_SLASH.search(raw):
            body = json.dumps(
                {
                    "error": "invalid_input",
                    "message": "The request's path holds an escaped '/' or '\\' (%2F or %5C) where a "
                    "name or id goes, and no name or id has one.",
                    "fix": "Use the name or id as the list of its kind shows it.",
                }
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
