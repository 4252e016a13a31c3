"""The headers the services' proxy passes on, each way: nothing hop-by-hop, nothing of orch's
(its token, its cookie), and where the service is mounted."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from orch.server.tokens import TOKEN_COOKIE, cookie_holds_token, holds_token
from orch.services.routing import Route

# Hop-by-hop headers (RFC 9110 §7.6.1), and what the proxy sets itself: never passed on.
NOT_PASSED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",  # 100-continue is between the client and this server, which answers it
        "host",
        "x-forwarded-prefix",
        "orch-relay-token",  # a relayed request's (server/relay.py)
        "orch-replica",
    }
)
# What the answer gets from orch's server itself: one `date` (the service's would be a second).
# And what would act on orch's own origin from a service's answer: a browser applies these to
# the whole host, whatever its port, so to the API and web UI's origin too (docs/services.md,
# "Private and public"): Clear-Site-Data ("cookies" clears the web UI's sign-in cookie),
# Strict-Transport-Security (a service's max-age=0 would lift the host's HSTS). And what would act
# on the other services, which share the services' origin: Service-Worker-Allowed would let one
# service's worker take the scope "/", every service's pages (without it, its scope stays under
# the service's own path).
NOT_RETURNED = NOT_PASSED | {
    "date",
    "clear-site-data",
    "strict-transport-security",
    "service-worker-allowed",
}
# Who asked, as the edge saw it: set by the proxy that took the request from the client, in each
# form a service or its framework may read (X-Forwarded-*, RFC 7239's Forwarded, nginx's X-Real-IP).
_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
# The scheme of the request: a WebSocket's handshake is an HTTP request (nginx's $scheme), though
# an ASGI websocket scope says ws/wss.
_SCHEME = {"ws": "http", "wss": "https"}
# RFC 7230's tchar: a Forwarded value of only these needs no quotes (RFC 7239 §4).
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _connection_options(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The headers a Connection header names: hop-by-hop too (RFC 9110 §7.6.1)."""
    found: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            found |= {o.strip().lower() for o in value.split(b",") if o.strip()}
    return found - {b"close", b"keep-alive"}


def _forwarded_value(value: bytes) -> bytes:
    """A Forwarded parameter's value (RFC 7239 §4): a token as it is, else a quoted-string (an
    IPv6 address, a host with its port)."""
    if value and all(c in _TOKEN for c in value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def request_headers(
    scope: MutableMapping[str, Any], route: Route, relayed: bool = False
) -> list[tuple[bytes, bytes]]:
    """The client's headers as the service gets them: no hop-by-hop header, no orch token in
    any header and any form, as orch itself reads one and beyond (server/tokens.py; the
    Authorization of a private service always is one), no orch cookie; where it is mounted, and
    who asked: X-Forwarded-For with the client's address added to what it sent (the last one is
    the one to trust), X-Forwarded-Proto and -Host as it reached orch, the same in a Forwarded
    header (RFC 7239; orch's element added to what the client sent, as X-Forwarded-For), and
    X-Real-IP the client's address. A `relayed` request (a cluster's server to a node's proxy) has
    them from the server already."""
    out: list[tuple[bytes, bytes]] = []
    named = _connection_options(scope["headers"])
    forwarded_for = forwarded = b""
    for key, value in scope["headers"]:
        k = key.lower()
        if k.decode("latin-1") in NOT_PASSED or k in named or k.startswith(b"sec-websocket-"):
            continue
        if k in _FORWARDED and not relayed:
            if k == b"x-forwarded-for":
                forwarded_for = value.strip()
            elif k == b"forwarded":
                forwarded = value.strip()
            continue
        if k == b"authorization" and not route.public:
            continue
        text = value.decode("latin-1")
        if k == b"cookie":
            kept = [c.strip() for c in text.split(";") if c.strip() and not cookie_holds_token(c)]
            if not kept:
                continue
            value = "; ".join(kept).encode("latin-1")
        elif holds_token(text):
            continue
        out.append((k, value))
    out.append((b"x-forwarded-prefix", f"/services/{route.workspace}/{route.name}".encode()))
    if not relayed:
        client = (scope.get("client") or ("", 0))[0].encode()
        scheme = str(scope.get("scheme", "http"))
        proto = _SCHEME.get(scheme, scheme).encode()
        out.append((b"x-forwarded-for", b", ".join(v for v in (forwarded_for, client) if v)))
        out.append((b"x-forwarded-proto", proto))
        host = next((v for k, v in scope["headers"] if k.lower() == b"host"), None)
        if host:
            out.append((b"x-forwarded-host", host))
        # RFC 7239 §6: an IPv6 address in brackets (so quoted), no address known is "unknown".
        node = (b"[" + client + b"]" if b":" in client else client) or b"unknown"
        element = b"for=" + _forwarded_value(node) + b";proto=" + _forwarded_value(proto)
        if host:
            element += b";host=" + _forwarded_value(host)
        out.append((b"forwarded", b", ".join(v for v in (forwarded, element) if v)))
        if client:
            out.append((b"x-real-ip", client))
    return out


def subprotocols(scope: MutableMapping[str, Any]) -> list[str]:
    """A WebSocket's subprotocols (Sec-WebSocket-Protocol) as the service gets them: none that
    holds an orch token (a browser's WebSocket can send no Authorization, so a page puts its
    token there; found by a tester)."""
    return [p for p in scope.get("subprotocols") or [] if not holds_token(p)]


def answer_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The service's answer headers as the client gets them: no hop-by-hop header, no Set-Cookie
    of orch's cookie and no Clear-Site-Data (a service must not sign a browser in or out of
    orch), no Strict-Transport-Security (NOT_RETURNED)."""
    out = []
    named = _connection_options(raw)
    for key, value in raw:
        k = key.lower()
        if k.decode("latin-1") in NOT_RETURNED or k in named:
            continue
        if k == b"set-cookie" and value.split(b"=", 1)[0].strip() == TOKEN_COOKIE.encode():
            continue
        out.append((k, value))
    return out
