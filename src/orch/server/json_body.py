"""A request's JSON body, read as JSON is defined (RFC 8259): Python's json also reads NaN,
Infinity and -Infinity, which no other JSON reader takes. A run's input holding one reached its
agent as text that a Node agent's JSON.parse refuses; the API refuses it instead, as the CLI
does (422, naming it and where it is)."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

# A string (skipped whole, escapes and all), or one of the words Python's json reads.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|(NaN|-?Infinity)')


def loads(body: bytes | str) -> Any:
    """`body` as JSON; json.JSONDecodeError (with the place) for a word that is not JSON."""
    return json.loads(body, parse_constant=lambda word: _refuse(word, body))


def _refuse(word: str, body: bytes | str) -> None:
    doc = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    where = next((m.start(1) for m in _TOKENS.finditer(doc) if m.group(1)), 0)
    raise json.JSONDecodeError(f"{word} is not a JSON value", doc, where)


class JsonRequest(Request):
    """A request whose JSON body is read by `loads` (FastAPI reads a route's body with
    `request.json()`)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json
