"""Requests to an http:// server over the standard library's http.client, without httpx.

Importing httpx costs about 50 ms of CPU on a 2-core machine (its own transport, httpcore with h11
and anyio, 70 more): a third of a quick `orch env list`, whose own budget is 150 ms. A server
reached over http:// without a proxy (the local `orch server`, a loopback or LAN address) needs
nothing httpx adds over http.client (TLS, HTTP/2, proxies, cookies, async). So `Transport` sends
to such a server through `PlainHTTP`, and to any other (https://, a proxy in the environment, a
transport the caller gives) through httpx. Both answer with the few members of httpx.Response that
orch uses (`Answer`) and fail with `Timeout` or `Broken`, so nothing above Transport can tell
them apart.

What it does: keep-alive connections per host, reused once their answer was read to its end and
dropped when the server has closed them meanwhile (as httpcore does); a request sent again on a
fresh connection when a reused one turns out closed and the method is idempotent; the connect
timeout for connecting and the read timeout for every later wait; answers streamed as they arrive
(NDJSON), de-chunked by http.client, gzip and deflate undone here; query strings and JSON bodies
encoded as httpx encodes them.
"""

from __future__ import annotations

import codecs
import http.client
import json as jsonlib
import select
import threading
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

from orch import __version__

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
READ_SIZE = 65536


class Broken(Exception):
    """The request could not be sent, or its answer broke off. `kind` names what failed, in
    httpx's words (ConnectError, ReadError...), for the message the user sees."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Timeout(Broken):
    """A connect or a read waited longer than its timeout."""


def query(params: Mapping[str, Any] | None) -> str:
    """`params` as httpx puts them in a URL: True/False as true/false, None as empty, a list or
    tuple as the key repeated."""
    if not params:
        return ""
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, list | tuple) else (value,):
            if item is True or item is False:
                item = "true" if item else "false"
            pairs.append((key, "" if item is None else str(item)))
    return urlencode(pairs)


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection can't be reused: the server closed it (or sent something
    unasked, which is as bad)."""
    if conn.sock is None:
        return True
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))


class Answer:
    """One answer: its status and headers at once, its body as it arrives (`iter_bytes`,
    `iter_lines`) or whole (`read`, then `content` and `json()`). Its connection goes back to the
    pool once the body was read to its end, and is dropped if it was closed before."""

    def __init__(
        self,
        client: PlainHTTP,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
    ) -> None:
        self.status_code = response.status
        self.reason_phrase = response.reason
        self.headers = response.msg
        self._client = client
        self._conn: http.client.HTTPConnection | None = conn
        self._response = response
        self._done = False
        self._content: bytes | None = None
        coding = (response.getheader("Content-Encoding") or "").strip().lower()
        # gzip, or deflate with or without its zlib header, as httpx accepts them
        self._unzip = zlib.decompressobj(47) if coding in ("gzip", "deflate") else None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("The answer's body was not read (call read() first).")
        return self._content

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def read(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.iter_bytes())
        return self._content

    def iter_bytes(self) -> Iterator[bytes]:
        for data in self._raw():
            if self._unzip is not None:
                data = self._unzip.decompress(data)
            if data:
                yield data
        if self._unzip is not None and (rest := self._unzip.flush()):
            yield rest

    def iter_lines(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        for data in self.iter_bytes():
            pending += decoder.decode(data)
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line.removesuffix("\r")
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending.removesuffix("\r")

    def _raw(self) -> Iterator[bytes]:
        while not self._done:
            try:
                data = self._response.read1(READ_SIZE)
            except TimeoutError:
                self._drop()
                raise Timeout("ReadTimeout", "The server's answer stopped coming.") from None
            except (http.client.HTTPException, OSError) as e:
                self._drop()
                raise Broken("ReadError", f"The server's answer broke off ({e!r}).") from None
            if not data:
                self._done = True
                return
            yield data

    def close(self) -> None:
        if self._conn is None:
            return
        if self._done and not self._response.will_close:
            self._response.close()  # read to its end: the connection may send the next request
            self._client._release(self._conn)
            self._conn = None
        else:  # closed half-read, or the server said it closes: never reused
            self._drop()

    def _drop(self) -> None:
        self._response.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PlainHTTP:
    """Requests to one http:// server (`base_url`), each with `headers` (the token): see the
    module's docstring."""

    def __init__(self, base_url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url} is not a plain http:// address.")
        self._key = (parts.hostname, parts.port or 80)
        self._prefix = parts.path.rstrip("/")
        host = parts.netloc.rsplit("@", 1)[-1]
        self._headers = {
            "Host": host,
            "Accept": "*/*",
            "User-Agent": f"orch/{__version__}",
            **headers,
        }
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        connect: float | None,
        read: float | None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[Answer]:
        """The answer to one request, its body still to come; its connection is released (or
        dropped, if the body was not read to its end) when the block ends."""
        target = self._prefix + path
        if q := query(params):
            target += ("&" if "?" in target else "?") + q
        sent = {**self._headers, **(headers or {})}
        body = b""
        if json is not None:
            # httpx's encoding: compact, UTF-8, no NaN
            body = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            sent.setdefault("Content-Type", "application/json")
        elif content is not None:
            body = content.encode() if isinstance(content, str) else content
        if body or method in ("POST", "PUT", "PATCH"):
            sent["Content-Length"] = str(len(body))
        answer = self._send(method, target, sent, body, connect, read)
        try:
            yield answer
        finally:
            answer.close()

    def _send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        connect: float | None,
        read: float | None,
    ) -> Answer:
        while True:
            conn, reused = self._connection(connect, read)
            try:
                response = self._exchange(conn, method, target, headers, body)
            except Broken:
                conn.close()
                if reused and method in IDEMPOTENT:
                    continue  # a kept-alive connection the server had closed: once more, fresh
                raise
            return Answer(self, conn, response)

    @staticmethod
    def _exchange(
        conn: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> http.client.HTTPResponse:
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body or None)
        except TimeoutError:
            raise Timeout("WriteTimeout", "Sending the request timed out.") from None
        except OSError as e:
            raise Broken("WriteError", f"Sending the request failed ({e!r}).") from None
        try:
            return conn.getresponse()
        except TimeoutError:
            raise Timeout("ReadTimeout", "The server did not answer in time.") from None
        except (http.client.HTTPException, OSError) as e:
            raise Broken("RemoteProtocolError", f"The server sent no answer ({e!r}).") from None

    def _connection(
        self, connect: float | None, read: float | None
    ) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (reused: True), else a new one."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _closed_by_peer(conn):
                    conn.close()
                    continue
                assert conn.sock is not None  # checked by _closed_by_peer
                conn.sock.settimeout(read)
                return conn, True
        host, port = self._key
        conn = http.client.HTTPConnection(host, port, timeout=connect)
        try:
            conn.connect()
        except TimeoutError:
            raise Timeout("ConnectTimeout", f"Connecting to {host}:{port} timed out.") from None
        except OSError as e:
            raise Broken("ConnectError", f"Cannot connect to {host}:{port} ({e!r}).") from None
        assert conn.sock is not None  # connect() succeeded
        conn.sock.settimeout(read)
        return conn, False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            conns, self._idle = self._idle, []
        for conn in conns:
            conn.close()


__all__ = ["Answer", "Broken", "PlainHTTP", "Timeout", "query"]
