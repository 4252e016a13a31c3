"""An httpx transport for plain http:// over the standard library's http.client.

httpx's own transport is httpcore, with h11 and anyio beneath it: about 70 ms of CPU to import on
a 2-core machine, a quarter of a quick `orch env list`. A server reached over http:// without a
proxy (the local `orch server`, a loopback or LAN address) needs none of what it adds over
http.client (TLS, HTTP/2, proxies, async), and http.client is imported anyway (by httpx's
`urllib.request`). So `Transport` picks this one for such a server and httpx's for every other
(https://, or a proxy set in the environment); both answer as httpx.Response and fail as httpx's
exceptions, so nothing above the transport can tell them apart.

What it does: keep-alive connections per host, reused once their answer was read to its end and
dropped when the server has closed them meanwhile (as httpcore does), a request sent again on a
fresh connection when a reused one turns out closed and the method is idempotent; the request's
connect timeout for connecting and its read timeout for every later wait; answers streamed as
they arrive (NDJSON), decoded by httpx (chunked by http.client, gzip by httpx).
"""

from __future__ import annotations

import http.client
import select
import threading
from collections.abc import Iterator
from typing import Any

import httpx

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
READ_SIZE = 65536


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None]:
    """(connect, read) seconds of the request; None waits without limit."""
    given: dict[str, Any] = request.extensions.get("timeout") or {}
    return given.get("connect"), given.get("read")


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection can't be reused: the server closed it (or sent something
    unasked, which is as bad)."""
    if conn.sock is None:
        return True
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))


class _Answer(httpx.SyncByteStream):
    """An answer's body as it arrives; its connection goes back to the pool once read to the end."""

    def __init__(
        self,
        transport: PlainHTTPTransport,
        key: tuple[str, int],
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self._response = response
        self._request = request
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            try:
                data = self._response.read1(READ_SIZE)
            except TimeoutError:
                self._drop()
                raise httpx.ReadTimeout(
                    "The server's answer stopped coming.", request=self._request
                ) from None
            except (http.client.HTTPException, OSError) as e:
                self._drop()
                raise httpx.ReadError(
                    f"The server's answer broke off ({e!r}).", request=self._request
                ) from None
            if not data:
                self._done = True
                return
            yield data

    def close(self) -> None:
        if self._conn is None:
            return
        if self._done and not self._response.will_close:
            self._response.close()  # read to its end: the connection may send the next request
            self._transport._release(self._key, self._conn)
            self._conn = None
        else:  # closed half-read, or the server said it closes: never reused
            self._drop()

    def _drop(self) -> None:
        self._response.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PlainHTTPTransport(httpx.BaseTransport):
    """http:// only, no proxy: see the module's docstring."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{url.scheme}:// is not plain HTTP.", request=request)
        key = (url.host, url.port or 80)
        body = request.read()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"transfer-encoding"]
        if body and not any(k.lower() == b"content-length" for k, _ in headers):
            headers.append((b"Content-Length", str(len(body)).encode()))
        target = url.raw_path.decode("ascii")
        while True:
            conn, reused = self._connection(key, request)
            try:
                response = self._exchange(conn, request, target, headers, body)
            except httpx.TransportError:
                conn.close()
                if reused and request.method in IDEMPOTENT:
                    continue  # a kept-alive connection the server had closed: once more, fresh
                raise
            return httpx.Response(
                response.status,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()],
                stream=_Answer(self, key, conn, response, request),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason.encode("latin-1")},
                request=request,
            )

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        request: httpx.Request,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> http.client.HTTPResponse:
        try:
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name.decode("latin-1"), value)
            conn.endheaders(body or None)
        except TimeoutError:
            raise httpx.WriteTimeout("Sending the request timed out.", request=request) from None
        except OSError as e:
            raise httpx.WriteError(f"Sending the request failed ({e!r}).", request=request) from None
        try:
            return conn.getresponse()
        except TimeoutError:
            raise httpx.ReadTimeout("The server did not answer in time.", request=request) from None
        except (http.client.HTTPException, OSError) as e:
            raise httpx.RemoteProtocolError(f"The server sent no answer ({e!r}).", request=request) from None

    def _connection(
        self, key: tuple[str, int], request: httpx.Request
    ) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to `key` (reused: True), else a new one."""
        connect, read = _timeouts(request)
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                conn = idle.pop()
                if _closed_by_peer(conn):
                    conn.close()
                    continue
                assert conn.sock is not None  # checked by _closed_by_peer
                conn.sock.settimeout(read)
                return conn, True
        conn = http.client.HTTPConnection(key[0], key[1], timeout=connect)
        try:
            conn.connect()
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"Connecting to {key[0]}:{key[1]} timed out.", request=request
            ) from None
        except OSError as e:
            raise httpx.ConnectError(
                f"Cannot connect to {key[0]}:{key[1]} ({e!r}).", request=request
            ) from None
        assert conn.sock is not None  # connect() succeeded
        conn.sock.settimeout(read)
        return conn, False

    def _release(self, key: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def close(self) -> None:
        with self._lock:
            conns = [conn for idle in self._idle.values() for conn in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


__all__ = ["PlainHTTPTransport"]
