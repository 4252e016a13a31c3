"""The CLI's HTTP client: finds the server from the settings, turns error answers into OrchError."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from orch import config as config_mod
from orch.errors import OrchError, ServerUnreachable, from_dict

if TYPE_CHECKING:
    import httpx


def _import_httpx() -> None:
    """Import httpx, the slowest import of a quick command, only once a request is to be made;
    and without its own command line (httpx._main), which imports click, pygments and much of
    rich when they are installed (as here) and which orch never uses. A None in sys.modules makes
    that import fail, and httpx falls back to a stub `main`; the entry is removed at once."""
    if "httpx" in sys.modules:
        return
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        if blocked and sys.modules.get("httpx._main", False) is None:
            del sys.modules["httpx._main"]


def _tls_unused(url: str) -> bool:
    """True when no connection of this client can use TLS: the server's address is http://, and
    requests to it go straight there or through an http:// proxy (redirects are not followed)."""
    if not url.startswith("http://"):
        return False
    proxies = (os.environ.get(k, "") for k in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))
    return not any(p.strip().lower().startswith("https://") for p in proxies)


class Client:
    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        if not url:
            raise ServerUnreachable(
                "No orch server is configured.",
                "Start one with `orch server` (same ORCH_HOME), or run `orch login --url URL --token TOKEN`.",
            )
        _import_httpx()
        import ssl

        import httpx

        self.url = url.rstrip("/")
        # httpx loads the whole CA bundle for its default TLS context, whether or not a request
        # will use TLS: tens of ms (150 on a slow machine) at each start. The local server's
        # address is http://; then a context that trusts nothing does, and should a connection
        # ever need TLS it fails rather than go unverified.
        verify: ssl.SSLContext | bool = True
        if _tls_unused(self.url):
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(30.0, connect=5.0),
            transport=transport,
            verify=verify,
        )

    @classmethod
    def from_settings(cls) -> Client:
        cfg = config_mod.load()
        return cls(cfg.url, cfg.token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx  # imported by __init__: a lookup

        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ServerUnreachable(
                f"Cannot reach the orch server at {self.url} ({type(e).__name__}).",
                "Start it with `orch server`, or check ORCH_URL / `orch login`.",
            ) from None
        if resp.is_success:
            return resp.json()
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict) or "message" not in data:
            data = {"message": f"The server answered {resp.status_code} {resp.reason_phrase}."}
        raise from_dict(data)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


__all__ = ["Client", "OrchError"]
