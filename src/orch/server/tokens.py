"""How a request carries an orch token: the one reading of it that the API (api/deps.py), the
sandbox relay, the services' proxy's token rule (server/proxy.py) and what the proxy keeps from
the services (server/proxy_headers.py) share, so that they cannot differ on what is a token
(docs/services.md, "Private and public": a tester found the proxy passing `Bearer  orch_...`,
two spaces, to another workspace's public service while the API took it as the token)."""

from __future__ import annotations

import base64
import binascii
import re

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection, cookie_parser

# The web UI signs in by storing the token in this cookie (HttpOnly, SameSite=Strict); its pages
# and their scripts then call the same API as the CLI.
TOKEN_COOKIE = "orch_token"  # noqa: S105 - a cookie name, not a secret
# How every orch token begins (services/workspaces.py makes them "orch_" + 43 URL-safe characters).
TOKEN_PREFIX = "orch_"  # noqa: S105 - a prefix, not a secret
# An orch token written anywhere in a text: the prefix and at least 20 URL-safe characters (a
# token cut short is still most of one), not preceded by a character a token could hold.
_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_-])orch_[A-Za-z0-9_-]{20,}")


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization` value as orch reads it everywhere: the scheme `Bearer` in
    any case, whitespace (spaces or tabs, as many as sent), then the token, its own surrounding
    whitespace ignored. None for anything else (no scheme, another scheme, nothing after it)."""
    if not authorization:
        return None
    parts = authorization.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() or None


class BearerScheme(HTTPBearer):
    """FastAPI's bearer dependency (it documents the scheme in the OpenAPI document, under its
    own name), reading the header with `bearer`; None without a token (each route says why)."""

    def __init__(self, description: str) -> None:
        super().__init__(scheme_name="HTTPBearer", description=description, auto_error=False)

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        token = bearer(request.headers.get("authorization"))
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token else None


def holds_token(value: str) -> bool:
    """Whether a request header's value carries an orch token, in any form: what `bearer` reads
    beginning as a token does, and a token written anywhere else in it (no scheme, another
    scheme, a custom header's value) or as a `Basic` credential's user or password. What holds
    none (a service's own bearer secret, Basic user:password) does not."""
    token = bearer(value)
    if token is not None and token.startswith(TOKEN_PREFIX):
        return True
    if _IN_TEXT.search(value):
        return True
    scheme, _, given = value.strip().partition(" ")
    if scheme.lower() == "basic" and given.strip():
        try:
            decoded = base64.b64decode(given.strip() + "==", validate=False).decode("latin-1")
        except (binascii.Error, ValueError):
            return False
        return any(part.strip().startswith(TOKEN_PREFIX) for part in decoded.split(":", 1))
    return False


def sign_in_cookies(request: HTTPConnection) -> set[str]:
    """The values of every web UI sign-in cookie a request carries, in each of its `Cookie`
    headers (a proxy may pass HTTP/2's several apart). More than one: another page of the same
    host name set one at a path of its own (a browser sends both), and which is the UI's own
    can't be told (docs/ui.md)."""
    return {
        v
        for header in request.headers.getlist("cookie")
        for part in header.split(";")
        for n, v in cookie_parser(part).items()
        if n == TOKEN_COOKIE
    }


def cookie_holds_token(pair: str) -> bool:
    """Whether one `name=value` of a Cookie header is orch's: its name as the API reads cookies
    (Starlette's parser: spaces around the name ignored, the value unquoted) is the web UI's
    cookie, or its value carries a token."""
    return any(name == TOKEN_COOKIE or holds_token(value) for name, value in cookie_parser(pair).items())
