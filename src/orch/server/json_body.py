"""A request's JSON body, read as JSON is defined (RFC 8259): Python's json also reads NaN,
Infinity and -Infinity, which no other JSON reader takes. A run's input holding one reached its
agent as text that a Node agent's JSON.parse refuses; the API refuses it instead, as the CLI
does (422, naming it and where it is). So is a lone UTF-16 surrogate in a string (`"\\ud800"`),
which JSON's escapes can write but no UTF-8 text can hold: the store, an environment variable
and the agent could not take it (a run's input holding one was a 500). So is an object that names
a key twice (`{"timeout": 10, "timeout": 600}`): Python's json keeps the last, silently, and which
one a reader keeps is not defined (RFC 8259: names SHOULD be unique)."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

# A string (skipped whole, escapes and all), or one of the words Python's json reads.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|(NaN|-?Infinity)')
# What may write a surrogate: its escape, or its UTF-8-like bytes (json reads them, surrogatepass).
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(body: bytes | str) -> Any:
    """`body` as JSON; json.JSONDecodeError (with the place) for a word that is not JSON, or a
    string (a key too) that holds a lone surrogate."""
    try:
        value = json.loads(body, parse_constant=lambda word: _refuse(word, body), object_pairs_hook=_unique)
    except _Twice as twice:
        doc = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        raise json.JSONDecodeError(
            f"an object names the key {twice.key!r} twice", doc, _second_key(doc, twice.key)
        ) from None
    doc = body.decode("utf-8", "surrogatepass") if isinstance(body, bytes) else body
    if _MAYBE_SURROGATE.search(doc):  # most bodies hold none: only these are looked at closely
        for string in _TOKENS.finditer(doc):  # valid JSON: the strings, in order, keys too
            text = string.group()
            found = _SURROGATE.search(json.loads(text)) if _MAYBE_SURROGATE.search(text) else None
            if found:
                escaped = found.group().encode("unicode_escape").decode()
                raise json.JSONDecodeError(
                    f"a string holds a lone surrogate ({escaped}), which is not UTF-8 text",
                    doc,
                    string.start(),
                )
    return value


class _Twice(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Twice(key)
        found[key] = value
    return found


def _second_key(doc: str, key: str) -> int:
    """Where `key` is written as a key the second time in `doc` (0 when its escapes differ)."""
    written = json.dumps(key, ensure_ascii=False)
    places = [m.start() for m in re.finditer(re.escape(written) + r"\s*:", doc)]
    return places[1] if len(places) > 1 else 0


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
