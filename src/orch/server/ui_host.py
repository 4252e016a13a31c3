"""The web UI is not served on the services' host name.

Browsers keep cookies by host name, not by port: the cookies a service's page sets on its host
(`localhost` by default, docs/services.md "Their own origin") reach every port of that host. The
UI reached there (http://localhost:8750/ui) would read them, so a service's script could sign its
visitor in to a workspace of its choosing. A request to the API and UI's port whose `Host` is the
services' host name (or a name under it), but not the address the connection came to, is
therefore answered without the UI and without cookies:

- a UI page asked with GET or HEAD is redirected (307) to the same path at the address the
  connection came to (http://127.0.0.1:8750/ui/...), where the UI's own cookies are;
- any other request to a UI path is refused (403, with a sentence), and nothing changes;
- no other request's cookies are read (its `Cookie` header is dropped): the API answers tokens
  (`Authorization: Bearer ...`) there, as on the services' own port.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send


def host_name(host: str) -> str:
    """The name in a `Host` header's value (no port, no brackets, no final dot), in lower case."""
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".").lower()


class ServicesHostName:
    """ASGI middleware of the API and UI's app: see the module's docstring."""

    def __init__(self, app: ASGIApp, services_url: str) -> None:
        self.app = app
        self.services = (urlsplit(services_url).hostname or "").rstrip(".")

    def _misdirected(self, scope: Scope) -> bool:
        server = scope.get("server")
        if not self.services or not server or host_name(str(server[0])) == self.services:
            return False  # the UI's own address is the services' (the server warned at start)
        for name, value in scope.get("headers", ()):
            if name == b"host":
                asked = host_name(value.decode("latin-1"))
                return asked == self.services or asked.endswith("." + self.services)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._misdirected(scope):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["type"] == "http" and (path == "/ui" or path.startswith("/ui/")):
            host, port = scope["server"][:2]
            own = f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"
            if scope["method"] in ("GET", "HEAD"):
                raw = (scope.get("raw_path") or quote(path).encode()).decode("latin-1")
                query = scope.get("query_string", b"").decode("latin-1")
                location = own + raw + (f"?{query}" if query else "")
                await _answer(send, 307, b"", [(b"location", location.encode("latin-1"))])
                return
            said = (
                f"The web UI is not served on {self.services}, the services' host name: a service's "
                f"page could set the cookies it reads. Open it at {own}/ui instead.\n"
            )
            await _answer(send, 403, said.encode(), [(b"content-type", b"text/plain; charset=utf-8")])
            return
        headers = [(name, value) for name, value in scope.get("headers", ()) if name != b"cookie"]
        await self.app({**scope, "headers": headers}, receive, send)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
