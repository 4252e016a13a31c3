"""Requests to an http:// server over a plain socket, without httpx or http.client.

Importing httpx costs about 50 ms of CPU on a 2-core machine (its own transport, httpcore with h11
and anyio, 70 more), and even the standard library's http.client costs about 24 ms (it parses
headers with the email package): together a quarter of a quick `orch env list`, whose own budget
is 150 ms (bench/cli_start.py). A server reached over http:// without a proxy (the local `orch
server`, a loopback or LAN address) needs nothing httpx adds (TLS, HTTP/2, proxies, cookies,
async), and what HTTP/1.1 framing a client needs to read an answer is small: a status line,
headers, then a body sized by Content-Length, chunked, or ended by the close. So `Transport` sends
to such a server through `PlainHTTP`, and to any other (https://, a proxy in the environment, a
transport the caller gives) through httpx. Both answer with the few members of httpx.Response that
orch uses (`Answer`) and fail with `Timeout` or `Broken`, so nothing above Transport can tell
them apart.

What it does: keep-alive connections per host, reused once their answer was read to its end and
dropped when the server has closed them meanwhile (as httpcore does); a request sent again on a
fresh connection when a reused one turns out closed and the method is idempotent (never one that
timed out: the server may be slow, not gone); the connect timeout for connecting, and the read
timeout as a deadline for the whole request (its sending, the answer's head and its body), so an
answer that trickles in a byte at a time can't hold the caller past it; answers streamed as they arrive
(NDJSON), de-chunked, gzip and deflate undone; informational (1xx) answers skipped; query strings
and JSON bodies encoded as httpx encodes them. An answer that breaks HTTP/1.1's framing is a
`Broken` ("RemoteProtocolError"), as in httpx.
"""

from __future__ import annotations

import codecs
import json as jsonlib
import select
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

from orch import __version__

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
READ_SIZE = 65536
LINE_LIMIT = 65536  # the longest status, header or chunk-size line read
HEADER_LIMIT = 100  # the most header lines in one answer


class Broken(Exception):
    """The request could not be sent, or its answer broke off. `kind` names what failed, in
    httpx's words (ConnectError, ReadError...), for the message the user sees."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Timeout(Broken):
    """A connect or a read waited longer than its timeout."""


class _Unframed(Exception):
    """The server's bytes are not HTTP/1.1 (turned into Broken by the caller)."""


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


class Headers:
    """An answer's headers: looked up by name in any case; a repeated name's values joined with
    ", " (as HTTP allows for the headers orch reads)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        self._values[key] = f"{self._values[key]}, {value}" if key in self._values else value

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def tokens(self, name: str) -> set[str]:
        """A comma-separated header's values, lower-cased (Connection, Transfer-Encoding)."""
        return {t.strip().lower() for t in self._values.get(name.lower(), "").split(",") if t.strip()}


class _Connection:
    """One TCP connection to the server, with what was read from it and not yet used."""

    def __init__(self, host: str, port: int, connect: float | None, read: float | None) -> None:
        self.sock = socket.create_connection((host, port), timeout=connect)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
        self.sock.settimeout(read)
        self._buffer = bytearray()
        self.deadline: float | None = None  # a time.monotonic() past which no wait goes on

    def limit(self) -> None:
        """Bound the socket's next wait by what is left before the deadline; TimeoutError when
        nothing is left."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request's deadline passed")
            self.sock.settimeout(left)

    def send(self, data: bytes) -> None:
        self.limit()
        self.sock.sendall(data)

    def closed_by_peer(self) -> bool:
        """True when an idle connection can't be reused: the server closed it (or sent something
        unasked, which is as bad)."""
        if self._buffer:
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def line(self) -> bytes:
        """The next line, without its end (CRLF, or LF alone, as lenient readers accept)."""
        start = 0
        while (end := self._buffer.find(b"\n", start)) < 0:
            if len(self._buffer) > LINE_LIMIT:
                raise _Unframed("a line longer than 64 KiB")
            start = len(self._buffer)
            if not self._fill():
                raise _Unframed("the connection closed in the middle of a line")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line.removesuffix(b"\r")

    def some(self, most: int) -> bytes:
        """Up to `most` bytes, as soon as any are there; b"" once the server has closed."""
        if not self._buffer and not self._fill():
            return b""
        data = bytes(self._buffer[:most])
        del self._buffer[:most]
        return data

    def _fill(self) -> bool:
        self.limit()
        data = self.sock.recv(READ_SIZE)
        self._buffer += data
        return bool(data)

    def close(self) -> None:
        self.sock.close()


class _Body:
    """An answer's body as HTTP/1.1 frames it: `length` bytes, chunks, or all until the close."""

    def __init__(self, conn: _Connection, length: int | None, chunked: bool) -> None:
        self._conn = conn
        self._left = length  # bytes of the body (or of the current chunk) still to come
        self._chunked = chunked
        self.done = length == 0 and not chunked

    def read(self) -> bytes:
        """The next piece of the body as it arrives; b"" at its end."""
        if self.done:
            return b""
        if self._chunked and not self._left:
            self._left = self._chunk_size()
            if not self._left:
                while self._conn.line():  # trailers, up to the empty line
                    pass
                self.done = True
                return b""
        data = self._conn.some(READ_SIZE if self._left is None else min(self._left, READ_SIZE))
        if not data:
            if self._left is None:  # the body ends with the connection
                self.done = True
                return b""
            raise _Unframed("the connection closed before the answer's end")
        if self._left is not None:
            self._left -= len(data)
            if not self._left:
                if self._chunked:
                    if self._conn.line():
                        raise _Unframed("a chunk longer than its size")
                else:
                    self.done = True
        return data

    def _chunk_size(self) -> int:
        size = self._conn.line().split(b";", 1)[0].strip()
        if not size or size.strip(b"0123456789abcdefABCDEF"):
            raise _Unframed(f"a bad chunk size {size[:20]!r}")
        return int(size, 16)


def _read_head(conn: _Connection) -> tuple[str, int, str, Headers]:
    """The answer's version, status, reason and headers; informational (1xx) answers skipped."""
    while True:
        version, _, rest = conn.line().decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _Unframed(f"not an HTTP/1.1 status line ({version[:20]!r} {code[:20]!r})")
        headers = Headers()
        for _ in range(HEADER_LIMIT + 1):
            line = conn.line()
            if not line:
                break
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise _Unframed(f"a bad header line {line[:40]!r}")
            headers.add(name, value.strip())
        else:
            raise _Unframed(f"more than {HEADER_LIMIT} header lines")
        status = int(code)
        if not 100 <= status < 200 or status == 101:
            return version, status, reason.strip(), headers


class Answer:
    """One answer: its status and headers at once, its body as it arrives (`iter_bytes`,
    `iter_lines`) or whole (`read`, then `content` and `json()`). Its connection goes back to the
    pool once the body was read to its end, and is dropped if it was closed before."""

    def __init__(self, client: PlainHTTP, conn: _Connection, method: str) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        version, self.status_code, self.reason_phrase, self.headers = _read_head(conn)
        connection = self.headers.tokens("Connection")
        chunked = "chunked" in self.headers.tokens("Transfer-Encoding")
        length = self.headers.get("Content-Length")
        if method == "HEAD" or self.status_code in (204, 304) or 100 <= self.status_code < 200:
            size: int | None = 0
        elif chunked:
            size = None
        elif length is not None:
            if not length.strip().isdigit():
                raise _Unframed(f"a bad Content-Length {length[:20]!r}")
            size = int(length)
        else:
            size = None  # until the server closes
        self._body = _Body(conn, size, chunked)
        self.will_close = (
            "close" in connection
            or (version == "HTTP/1.0" and "keep-alive" not in connection)
            or (size is None and not chunked)
        )
        self._content: bytes | None = None
        coding = (self.headers.get("Content-Encoding") or "").strip().lower()
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
                data = self._inflate(data)
            if data:
                yield data
        if self._unzip is not None and (rest := self._inflate(None)):
            yield rest

    def _inflate(self, data: bytes | None) -> bytes:
        """`data` decompressed (None: what is left at the end); a body that does not decompress
        is a broken answer (httpx's DecodingError), as a broken framing is."""
        assert self._unzip is not None
        try:
            return self._unzip.decompress(data) if data is not None else self._unzip.flush()
        except zlib.error as e:
            self._drop()
            raise Broken("DecodingError", f"The server's answer does not decompress ({e}).") from None

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
        while not self._body.done:
            try:
                data = self._body.read()
            except TimeoutError:
                self._drop()
                raise Timeout("ReadTimeout", "The server's answer stopped coming.") from None
            except (_Unframed, OSError) as e:
                self._drop()
                raise Broken("ReadError", f"The server's answer broke off ({e}).") from None
            if data:
                yield data

    def close(self) -> None:
        if self._conn is None:
            return
        if self._body.done and not self.will_close:
            self._client._release(self._conn)  # read to its end: it may carry the next request
            self._conn = None
        else:  # closed half-read, or the server said it closes: never reused
            self._drop()

    def _drop(self) -> None:
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
        self._idle: list[_Connection] = []
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
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent.items())
        answer = self._send(method, (head + "\r\n").encode("latin-1") + body, connect, read)
        try:
            yield answer
        finally:
            answer.close()

    def _send(self, method: str, request: bytes, connect: float | None, read: float | None) -> Answer:
        deadline = None if read is None else time.monotonic() + read
        while True:
            conn, reused = self._connection(connect, read)
            conn.deadline = deadline
            try:
                return self._exchange(conn, method, request)
            except Timeout:
                conn.close()
                raise  # never sent again: the server may be slow, not gone, and the limit is spent
            except Broken:
                conn.close()
                if reused and method in IDEMPOTENT:
                    continue  # a kept-alive connection the server had closed: once more, fresh
                raise

    def _exchange(self, conn: _Connection, method: str, request: bytes) -> Answer:
        try:
            conn.send(request)
        except TimeoutError:
            raise Timeout("WriteTimeout", "Sending the request timed out.") from None
        except OSError as e:
            raise Broken("WriteError", f"Sending the request failed ({e!r}).") from None
        try:
            return Answer(self, conn, method)
        except TimeoutError:
            raise Timeout("ReadTimeout", "The server did not answer in time.") from None
        except (_Unframed, OSError) as e:
            raise Broken("RemoteProtocolError", f"The server sent no answer ({e}).") from None

    def _connection(self, connect: float | None, read: float | None) -> tuple[_Connection, bool]:
        """An idle connection (reused: True), else a new one."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _closed_by_peer(conn):
                    conn.close()
                    continue
                conn.sock.settimeout(read)
                return conn, True
        host, port = self._key
        try:
            return _Connection(host, port, connect, read), False
        except TimeoutError:
            raise Timeout("ConnectTimeout", f"Connecting to {host}:{port} timed out.") from None
        except OSError as e:
            raise Broken("ConnectError", f"Cannot connect to {host}:{port} ({e!r}).") from None

    def _release(self, conn: _Connection) -> None:
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            conns, self._idle = self._idle, []
        for conn in conns:
            conn.close()


def _closed_by_peer(conn: _Connection) -> bool:
    # A function of the module, so a test can pretend a closed connection looks open.
    return conn.closed_by_peer()


__all__ = ["Answer", "Broken", "Headers", "PlainHTTP", "Timeout", "query"]
