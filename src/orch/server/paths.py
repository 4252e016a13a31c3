"""API paths whose segments hide a '/', and API paths or queries that are not UTF-8 text:
refused before routing.

The ASGI server hands the app the path with its escapes decoded, so `/v1/agents/a%2Fversions%2F1`
reaches the router as `/v1/agents/a/versions/1`, another route with other parameters. No name
or id holds a '/', so a request whose path segment does is refused with a sentence, as bad input,
instead of being answered as the request it was not. Escapes that decode to bytes which are
not UTF-8 (`?path=%FF`) would reach a route as U+FFFD, and a sandbox's file would be written
under a name the caller did not give: refused too. The services' proxy is not behind this: a
service's own paths are its own business.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

_ENCODED_SLASH = re.compile(rb"%2f|%5c", re.IGNORECASE)


class EncodedSeparators:
    """ASGI middleware: 400 for an API path (/v1/...) with an escaped '/' or '\\' in it, or whose
    path or query decodes to bytes that are not UTF-8."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or b""
        if scope["type"] == "http" and raw.startswith(b"/v1/"):
            refused = _refusal(raw, scope.get("query_string") or b"")
            if refused is not None:
                body = json.dumps(
                    {"error": "invalid_input", "message": refused[0], "fix": refused[1]}
                ).encode()
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _refusal(raw_path: bytes, query: bytes) -> tuple[str, str] | None:
    """The sentence and fix that refuse the request, or None."""
    if _ENCODED_SLASH.search(raw_path):
        return (
            "The request's path holds an escaped '/' or '\\' (%2F or %5C) where a name or id goes, "
            "and no name or id has one.",
            "Use the name or id as the list of its kind shows it.",
        )
    for part, where in ((raw_path, "path"), (query, "query")):
        if not escapes_text(part):
            return (
                f"The request's {where} holds escaped bytes that are not UTF-8 text, and every name, "
                "id, path and value the API takes is text.",
                "Escape the text's UTF-8 bytes (as every HTTP client does for a str).",
            )
    return None


def escapes_text(escaped: bytes) -> bool:
    """Whether percent-escaped bytes (a path, a query, a form's body) decode to UTF-8 text: the
    parsers read other escapes as U+FFFD, a value not the one sent."""
    try:
        unquote_to_bytes(escaped).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
