"""The one HTTP layer of orch's client and CLI: finds the server from the settings, sends the
token, turns error answers into orch's own exceptions (`errors.from_dict`) and a connection that
fails into ServerUnreachable.

It is kept cheap to import and to start, because every CLI command starts with it: httpx is
imported only when a Transport is made, without httpx's own command line; an http:// server
without a proxy is reached through `plain_http` (no httpcore), and no CA bundle is loaded for a
TLS context that no connection would use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch import config as config_mod
from orch.errors import OrchError, ServerUnreachable, from_dict

if TYPE_CHECKING:
    import httpx

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


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


def _proxied() -> bool:
    """True when the environment names a proxy for http:// requests (httpx would use it)."""
    return any(os.environ.get(k, "").strip() for k in PROXY_VARIABLES)


def _tls_unused(url: str) -> bool:
    """True when no connection of this client can use TLS: the server's address is http://, and
    requests to it go straight there or through an http:// proxy (redirects are not followed)."""
    if not url.startswith("http://"):
        return False
    proxies = (os.environ.get(k, "") for k in PROXY_VARIABLES)
    return not any(p.strip().lower().startswith("https://") for p in proxies)


class Transport:
    """Requests to one orch server as one workspace (its token); answers as parsed JSON.

    `get`, `post`, `put` and `delete` take httpx's keyword arguments (params, json, content,
    headers, timeout) and return the answer's JSON (None when it has no body); `send` returns the
    answer itself (bytes), `stream` an answer still arriving. Every error answer raises the
    OrchError subclass the server named, with its message and fix."""

    def __init__(
        self,
        url: str,
        token: str,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not url:
            raise ServerUnreachable(
                "No orch server is configured.",
                "Start one with `orch server` (same ORCH_HOME), or run `orch login --url URL --token TOKEN`.",
            )
        _import_httpx()
        import ssl

        import httpx

        self.url = url.rstrip("/")
        if transport is None and self.url.startswith("http://") and not _proxied():
            from orch.client.plain_http import PlainHTTPTransport

            transport = PlainHTTPTransport()
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
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            verify=verify,
        )

    @classmethod
    def from_settings(cls, home: Path | None = None) -> Transport:
        """The server and token the settings name: ORCH_URL and ORCH_TOKEN, else what `orch
        login` or the local `orch server` wrote in $ORCH_HOME/config.toml."""
        cfg = config_mod.load(home)
        return cls(cfg.url, cfg.token)

    def waiting(self, seconds: float | None) -> httpx.Timeout:
        """A timeout for a request whose answer may take `seconds` (None: as long as it takes),
        connecting within the usual limit."""
        import httpx  # imported by __init__: a lookup

        return httpx.Timeout(seconds, connect=self._http.timeout.connect)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer to one request, read whole; an error answer raises."""
        with self.stream(method, path, **kwargs) as resp:
            resp.read()
        return resp

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """The answer to one request as it arrives (iter_lines, iter_bytes); an error answer
        raises before the block runs, and a connection that breaks inside it raises too."""
        import httpx  # imported by __init__: a lookup

        try:
            with self._http.stream(method, path, **kwargs) as resp:
                if not resp.is_success:
                    resp.read()
                    raise _error(resp)
                yield resp
        except httpx.TimeoutException as e:
            raise ServerUnreachable(
                f"The orch server at {self.url} did not answer in time ({type(e).__name__}).",
                "Check that it is running and not overloaded (`orch server`), then try again.",
            ) from None
        except httpx.TransportError as e:
            raise ServerUnreachable(
                f"Cannot reach the orch server at {self.url} ({type(e).__name__}).",
                "Start it with `orch server`, or check ORCH_URL / `orch login`.",
            ) from None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.send(method, path, **kwargs)
        return resp.json() if resp.content else None

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self._http.close()


def _error(resp: httpx.Response) -> OrchError:
    """The exception an error answer stands for: the server's own, else one naming the status."""
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict) or "message" not in data:
        data = {"message": f"The server answered {resp.status_code} {resp.reason_phrase}."}
    return from_dict(data)
