"""Who asked, as a service learns it: orch's own `Forwarded` (RFC 7239) and `X-Real-IP` next to
its X-Forwarded-*, never a client's claim alone, and the scheme of the request (`http`/`https`)
on a WebSocket's handshake too."""

from __future__ import annotations

from typing import Any

import pytest

from orch.server.proxy_headers import request_headers
from orch.services.routing import Route

ROUTE = Route("team", "ws_1", "svc_1", "web", public=True, state="running", backends=())


def _scope(client: str | None, scheme: str = "http", *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {
        "client": (client, 5555) if client else None,
        "scheme": scheme,
        "headers": [(b"host", b"orch.example:8751"), *headers],
    }


def _sent(scope: dict[str, Any], relayed: bool = False) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for k, v in request_headers(scope, ROUTE, relayed):
        out.setdefault(k, []).append(v)
    return out


def test_a_clients_forwarded_is_followed_by_orchs_and_its_x_real_ip_replaced() -> None:
    sent = _sent(
        _scope(
            "203.0.113.9",
            "http",
            (b"forwarded", b"for=1.1.1.1;host=evil;proto=https"),
            (b"x-real-ip", b"9.9.9.9"),
            (b"x-forwarded-for", b"1.1.1.1"),
        )
    )
    # The client's list kept before orch's own element, as X-Forwarded-For keeps it: trust the last.
    assert sent[b"forwarded"] == [
        b'for=1.1.1.1;host=evil;proto=https, for=203.0.113.9;proto=http;host="orch.example:8751"'
    ]
    assert sent[b"x-forwarded-for"] == [b"1.1.1.1, 203.0.113.9"]
    assert sent[b"x-real-ip"] == [b"203.0.113.9"]


def test_without_a_clients_claim_forwarded_is_orchs_alone() -> None:
    sent = _sent(_scope("203.0.113.9", "https"))
    assert sent[b"forwarded"] == [b'for=203.0.113.9;proto=https;host="orch.example:8751"']
    assert sent[b"x-real-ip"] == [b"203.0.113.9"]


def test_an_ipv6_client_is_quoted_and_bracketed_in_forwarded() -> None:
    scope = {"client": ("2001:db8::1", 1), "scheme": "http", "headers": [(b"host", b"[::1]:8751")]}
    sent = _sent(scope)
    assert sent[b"forwarded"] == [b'for="[2001:db8::1]";proto=http;host="[::1]:8751"']
    assert sent[b"x-forwarded-for"] == [b"2001:db8::1"]
    assert sent[b"x-real-ip"] == [b"2001:db8::1"]


def test_an_unknown_client_is_unknown_in_forwarded() -> None:
    sent = _sent(_scope(None))
    assert sent[b"forwarded"] == [b'for=unknown;proto=http;host="orch.example:8751"']
    assert b"x-real-ip" not in sent


def test_a_host_with_a_quote_is_escaped_in_forwarded() -> None:
    scope = {"client": ("203.0.113.9", 1), "scheme": "http", "headers": [(b"host", b'a"b\\c')]}
    assert _sent(scope)[b"forwarded"] == [b'for=203.0.113.9;proto=http;host="a\\"b\\\\c"']


@pytest.mark.parametrize(("scheme", "proto"), [("ws", b"http"), ("wss", b"https"), ("https", b"https")])
def test_a_websocket_handshake_is_forwarded_as_http_or_https(scheme: str, proto: bytes) -> None:
    sent = _sent(_scope("203.0.113.9", scheme))
    assert sent[b"x-forwarded-proto"] == [proto]
    assert b";proto=" + proto + b";" in sent[b"forwarded"][0]


def test_a_relayed_request_keeps_what_its_server_said() -> None:
    said = b'for=203.0.113.9;proto=https;host="orch.example"'
    scope = _scope("10.0.0.2", "http", (b"forwarded", said), (b"x-real-ip", b"203.0.113.9"))
    sent = _sent(scope, relayed=True)
    assert sent[b"forwarded"] == [said]
    assert sent[b"x-real-ip"] == [b"203.0.113.9"]
