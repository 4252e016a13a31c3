"""The proxy's HTTP/1.1 client to the services' containers: asyncio streams, kept-alive
connections per address, answers streamed as they come (Content-Length, chunked, or until the
connection ends). A connection goes back to the pool only in step: its answer read whole, by a
framing that was not ambiguous, and nothing after it. Why not httpx: its connection pool checks
every pooled connection's socket at each request, which cost the proxy more than the request
itself (bench/service.py); this client does only what the hop to a container on the local bridge
needs."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024  # the status line and headers of an answer
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0  # until the answer begins, and between two pieces of it
# How long the service may take none of a request's body (a write of it waits that long): then
# the rest is not sent. A service that answered early and stopped reading, its connection open,
# held the send (and the caller's connection) for ever.
SEND_TIMEOUT = 300.0
IDLE_PER_ADDRESS = 64  # kept-alive connections kept per container
MAX_INTERIM = 16  # interim (1xx) answers before the answer
# A caller who leaves while the answer's head is awaited ends the wait, watched only once the
# head is this late: a watch costs a task, which most answers come well within.
WATCH_AFTER = 1.0
# What a header of an answer may be (RFC 9110 §5.1, §5.5): its name a token, its value no control
# character but HTAB. uvicorn refuses the rest once the answer is under way (the client got an empty
# reply, the log a traceback); a line that begins with whitespace (obs-fold) is no token either.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class UpstreamError(Exception):
    """The service could not be reached, or broke off its answer."""


class ConnectFailed(UpstreamError):
    """No connection: nothing was sent. `refused`: the address answered that nothing listens
    (the service's process is gone), rather than not answering in time."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class NothingCame(UpstreamError):
    """The connection ended before any answer (a kept-alive one the service had closed)."""


class ClientLeft(Exception):
    """The caller went away before the answer's head came: nobody to answer (the connection to
    the service is closed, so a hung service does not hold it for the rest of READ_TIMEOUT)."""


class _Reader(asyncio.StreamReader):
    """A connection's reader that gives what came before the connection's error (a reset), then
    the error, as the socket itself does; asyncio's reader raises the error at once, what came
    before it unread. A service that answers before it has read a request's body and closes
    (RFC 9112 §9.6 allows it: a 413 for the body's size, a 401) has its kernel reset the
    connection, the body unread: found by a tester, the service's 413 was lost so, and the caller
    got orch's 503 `did not answer (Connection reset by peer)`."""

    _failed: Exception | None = None

    def set_exception(self, exc: Exception) -> None:
        self._failed = exc
        self._wakeup_waiter()  # type: ignore[attr-defined]  # a read waiting looks at what came

    def exception(self) -> Exception | None:
        return self._failed or super().exception()

    def reset_ends(self) -> None:
        """Take the connection's reset, once what came before it is read, for its end: a service
        that answered before reading all of a request's body resets the connection for that
        body, not to break off its answer (one that ends with the connection ends there)."""
        if self._failed is not None and not self._eof:  # type: ignore[attr-defined]
            self._failed = None
            self.feed_eof()

    async def _wait_for_data(self, func_name: str) -> None:
        if self._failed is not None:  # what came is read: the error
            raise self._failed
        await super()._wait_for_data(func_name)  # type: ignore[misc]


async def _connect(address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection, with a `_Reader`."""
    loop = asyncio.get_running_loop()
    reader = _Reader(limit=MAX_HEAD, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, address, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()

    def stray(self) -> bool:
        """Whether the connection holds what no request of the proxy asked for: bytes after the
        answer (a body on a HEAD, 204 or 304 answer, more than its Content-Length, anything that
        came while it was idle) or its end. Whatever they are, read as the next request's answer
        they would be the next caller's (nginx closes an idle upstream connection that becomes
        readable, for the same reason). asyncio has no public way to ask what a StreamReader
        holds, hence its `_buffer` (the bytes read from the socket, not yet by the proxy)."""
        reader = self.reader
        return self.held() or reader.at_eof() or reader.exception() is not None

    def held(self) -> bool:
        """Whether the reader holds bytes the proxy has not read yet."""
        held: bytearray = self.reader._buffer  # type: ignore[attr-defined]
        return bool(held)


@dataclass
class Answer:
    """A service's answer: its head at once, its body as it comes (`body`), once."""

    status: int
    headers: list[tuple[bytes, bytes]]
    _conn: _Connection
    _client: Client
    _key: tuple[str, int]
    _framing: str  # "none", "length", "chunked", "close"
    _length: int = 0
    _keep: bool = True  # the service keeps the connection open after the answer
    _done: bool = field(default=False)  # the body was read whole
    # The service answered before the request's body was all sent (the rest was not): the
    # caller's connection is closed after the answer, for the rest of its body is unread.
    early: bool = False
    # Early, and the service then took none of the body for SEND_TIMEOUT (its connection open).
    stalled: bool = False

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    def whole(self) -> bool:
        """Whether the body has come whole with the head (it waits in the connection's buffer:
        reading it waits for nothing), as most small answers do. Known for a body of a known
        length only (or none)."""
        if self._framing == "none":
            return True
        held: bytearray = self._conn.reader._buffer  # type: ignore[attr-defined]  # as `stray`
        return self._framing == "length" and len(held) >= self._length

    async def body(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        try:
            if self._framing == "length":
                left = self._length
                while left:
                    data = await _read(reader.read(min(left, CHUNK)))
                    if not data:
                        raise UpstreamError("the answer ended before its Content-Length")
                    left -= len(data)
                    yield data
            elif self._framing == "chunked":
                while True:
                    line = await _read(reader.readuntil(b"\r\n"))
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while (await _read(reader.readuntil(b"\r\n"))) != b"\r\n":  # trailers
                            pass
                        break
                    yield await _read(reader.readexactly(size))
                    await _read(reader.readexactly(2))
            elif self._framing == "close":
                while data := await _read(reader.read(CHUNK)):
                    yield data
            self._done = True
        except TimeoutError:
            raise UpstreamError(f"the answer stalled for {READ_TIMEOUT:g} s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            raise UpstreamError("the answer broke off") from None

    def release(self) -> None:
        """Give the connection back for the next request if the answer was read whole and nothing
        came after it; otherwise close it (the answer already given stays as it was)."""
        if self._keep and self._done and not self._conn.writer.is_closing() and not self._conn.stray():
            self._client._keep(self._key, self._conn)
        else:
            self._conn.close()


async def _read(awaitable: object, timeout: float = READ_TIMEOUT) -> bytes:
    async with asyncio.timeout(timeout):
        return await awaitable  # type: ignore[no-any-return,misc]


async def _head(reader: asyncio.StreamReader, gone: Callable[[], Awaitable[None]] | None) -> bytes:
    """The next answer's head, within READ_TIMEOUT; ClientLeft if `gone` (the caller leaving)
    ends first, watched after WATCH_AFTER s. A read cut short keeps what came in the reader's
    buffer, so the head is read on after the first wait."""
    if gone is None:
        return await _read(reader.readuntil(b"\r\n\r\n"))
    with contextlib.suppress(TimeoutError):
        return await _read(reader.readuntil(b"\r\n\r\n"), WATCH_AFTER)
    head = asyncio.ensure_future(_read(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT - WATCH_AFTER))
    left = asyncio.ensure_future(gone())
    try:
        await asyncio.wait([head, left], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (head, left):
            task.cancel()
        for task in (head, left):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if head.done() and not head.cancelled():
        return head.result()  # its errors are the read's
    raise ClientLeft


class Client:
    """Requests to services' containers over kept-alive connections."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(
        self,
        container: str,
        address: str,
        port: int,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
        length: int | None,
        gone: Callable[[], Awaitable[None]] | None = None,
    ) -> Answer:
        """Send a request (a body of `length` bytes, or chunked if None) and read the answer's head.
        Connections are kept per container (whose name is never used again, unlike an address).
        `gone` returns when the caller leaves: then ClientLeft, and the connection is closed."""
        key = (container, port)
        conn = self._take(key)
        reused = conn is not None
        if conn is None:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await _connect(address, port)
            except TimeoutError:
                raise ConnectFailed(f"no connection within {CONNECT_TIMEOUT:g} s") from None
            except OSError as e:
                refused = isinstance(e, ConnectionRefusedError)
                raise ConnectFailed("the connection was refused" if refused else _said(e), refused) from None
            conn = _Connection(reader, writer)
        head = [f"{method} {target} HTTP/1.1\r\nhost: {address}:{port}\r\n".encode("latin-1")]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        if body is not None:
            framing = (
                b"content-length: %d\r\n" % length
                if length is not None
                else b"transfer-encoding: chunked\r\n"
            )
            head.append(framing)
        head.append(b"\r\n")
        answer: Answer | None = None
        try:
            if body is not None and length is not None and length <= CHUNK:
                # A small body that comes whole (most do, with the request's head) goes with the
                # head, in one write; one that comes in pieces (a caller that sends it slowly) is
                # watched as a large one is, for an answer before its end.
                first = await anext(body, b"")
                if len(first) >= length:
                    conn.writer.write(b"".join(head) + first)
                else:
                    conn.writer.write(b"".join(head))
                    answer = await self._send_watched(key, conn, method, _following(first, body), length)
            else:
                conn.writer.write(b"".join(head))
                if body is not None:
                    answer = await self._send_watched(key, conn, method, body, length)
            if answer is None:
                await conn.writer.drain()
                raw = await _head(conn.reader, gone)
                # Interim answers (100 Continue, 103 Early Hints) come before the answer: never
                # the answer (the client's own 100 Continue is its server's). Reading one as the
                # answer left the real one on the kept-alive connection, for the next caller.
                for _ in range(MAX_INTERIM):
                    if not _interim(raw):
                        break
                    raw = await _head(conn.reader, gone)
        except asyncio.IncompleteReadError as e:
            conn.close()
            if not e.partial:
                raise NothingCame("the connection ended before an answer") from None
            raise UpstreamError("the answer's head broke off") from None
        except TimeoutError:
            conn.close()
            raise UpstreamError(f"no answer within {READ_TIMEOUT:g} s") from None
        except asyncio.LimitOverrunError:
            conn.close()
            raise UpstreamError(f"the answer's head is larger than {MAX_HEAD // 1024} KiB") from None
        except OSError as e:
            conn.close()
            if reused and isinstance(e, ConnectionResetError) and not conn.held():
                # A kept-alive connection the service reset before any answer: as one it had closed
                # (a request without effects is sent again, on a new connection, as nginx does).
                raise NothingCame(f"the connection was reset before an answer ({_said(e)})") from None
            raise UpstreamError(_said(e)) from None
        except BaseException:  # the caller left (ClientLeft, or cancelled): half a request
            conn.close()
            raise
        if answer is None:
            answer = _answer(self, key, conn, method, raw)
            if body is not None and answer.status >= 400:
                # An error answer to a request with a body, the body sent: the service may have
                # answered before it read the body (a 401, a 413), as it may answer after (a 422):
                # what is left of the body in the connection, unread, is no next request's to meet.
                # Found by a tester: a service that answered 401 keep-alive to a small body and read
                # no more held the next, unrelated request until it closed, then it was a 503.
                answer._keep = False
        return answer

    async def _send_watched(
        self,
        key: tuple[str, int],
        conn: _Connection,
        method: str,
        body: AsyncIterator[bytes],
        length: int | None,
    ) -> Answer | None:
        """Send a body that did not come whole at once (larger than CHUNK, of unknown length, or
        sent in pieces by the caller) while watching for the answer:
        a service may answer before it has read the body, and close (RFC 9112 §9.6: a 413 for
        its size, a 401, http.server's 501 for a method it does not serve), as it may answer as
        it reads (a stream of its own). The answer is taken early, the rest of the body not sent,
        once the service has said all of it (its body came whole with its head) or ended the
        connection (the body could not be sent on); an answer the service is still writing
        waits for the body sent whole, as any answer, unless the service takes none of it for
        SEND_TIMEOUT (`Answer.stalled`: the rest is not sent). None when the body went whole
        before any answer: its head is read as any other's. The caller's connection is closed
        after an early answer (`Answer.early`): what is left of its body is unread."""
        # The socket, held apart from the transport's: the transport drops what the socket still
        # holds when a write fails (the service reset the connection), its answer among it.
        held = conn.writer.get_extra_info("socket").dup()
        sending = asyncio.ensure_future(_send_body(conn.writer, body, length))
        heading = asyncio.ensure_future(_final_head(conn.reader))
        try:
            await asyncio.wait([sending, heading], return_when=asyncio.FIRST_COMPLETED)
            if not heading.done():
                error = sending.exception()
                if error is None:
                    return None  # the body went whole: its answer is read as any other's
                if isinstance(error, TimeoutError):
                    raise UpstreamError(f"it read none of the request's body for {SEND_TIMEOUT:g} s")
                if not isinstance(error, OSError):
                    raise error  # the caller left: half a request
                with contextlib.suppress(Exception):  # the service ended the connection
                    await _read(heading)
            if heading.exception() is not None and _recovered(conn.reader, held):
                heading = asyncio.ensure_future(_final_head(conn.reader))
                await heading
            answer = _answer(self, key, conn, method, heading.result())  # its errors are the read's
            if not sending.done() and not answer.whole() and not _ended(conn.reader):
                await asyncio.wait([sending])  # the service is still writing: maybe as it reads
                if isinstance(sending.exception(), ClientLeft):
                    raise ClientLeft
            _recovered(conn.reader, held)  # the rest of the answer
            # The answer's head came before the body was all sent: the service answered before it
            # read the body, and may read no more of it. Never the connection of a next request.
            answer._keep = False
            if not sending.done() or sending.exception() is not None:
                answer.early = True
                answer.stalled = sending.done() and isinstance(sending.exception(), TimeoutError)
                if isinstance(conn.reader, _Reader):
                    conn.reader.reset_ends()
            return answer
        finally:
            held.close()
            for task in (sending, heading):
                task.cancel()
            for task in (sending, heading):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            # The service closed it meanwhile, or wrote to it while idle: no answer of the next request.
            if conn.writer.is_closing() or conn.stray():
                conn.close()
                continue
            return conn
        return None

    def _keep(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < IDLE_PER_ADDRESS:
            idle.append(conn)
        else:
            conn.close()

    def forget(self, containers: list[str]) -> None:
        """Close the kept connections to `containers` (they went)."""
        for key in [k for k in self._idle if k[0] in containers]:
            for conn in self._idle.pop(key):
                conn.close()

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


async def _send_body(writer: asyncio.StreamWriter, body: AsyncIterator[bytes], length: int | None) -> None:
    """Send a request's body: `length` bytes, or chunked if None."""
    async for piece in body:
        if piece:
            writer.write(piece if length is not None else b"%x\r\n%s\r\n" % (len(piece), piece))
            async with asyncio.timeout(SEND_TIMEOUT):  # TimeoutError: the service reads no more
                await writer.drain()
    if length is None:
        writer.write(b"0\r\n\r\n")


async def _following(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`first`, then what `rest` yields."""
    yield first
    async for piece in rest:
        yield piece


def _ended(reader: asyncio.StreamReader) -> bool:
    return reader.at_eof() or reader.exception() is not None


def _recovered(reader: asyncio.StreamReader, sock: socket.socket) -> bool:
    """Give `reader` what `sock` (its connection's socket, held apart) still holds once its
    transport ended with an error, without waiting; whether anything was. A transport whose write
    fails (the service reset the connection, having answered) drops what it did not read yet;
    the socket still holds it (up to MAX_HEAD * 16 is taken)."""
    if reader.exception() is None or reader._eof:  # type: ignore[attr-defined]
        return False  # its transport reads on, or read all to the connection's end
    sock.setblocking(False)
    got = b""
    with contextlib.suppress(OSError):
        while len(got) < MAX_HEAD * 16 and (data := sock.recv(CHUNK)):
            got += data
    reader.feed_data(got)
    return bool(got)


async def _final_head(reader: asyncio.StreamReader) -> bytes:
    """The head of the answer after any interim ones, however long it takes (as a body is sent)."""
    raw = await reader.readuntil(b"\r\n\r\n")
    for _ in range(MAX_INTERIM):
        if not _interim(raw):
            break
        raw = await reader.readuntil(b"\r\n\r\n")
    return raw


def _interim(raw: bytes) -> bool:
    """Whether an answer's head is an interim one (1xx but 101, which `_answer` refuses)."""
    status = raw[9:12]  # "HTTP/1.1 1xx"
    return raw.startswith(b"HTTP/1.") and status.isdigit() and status[0:1] == b"1" and status != b"101"


def _said(e: OSError) -> str:
    """An OS error as a few words ('No route to host'), not a Python name."""
    return (e.strerror or "the connection failed").rstrip(".")


def _answer(client: Client, key: tuple[str, int], conn: _Connection, method: str, raw: bytes) -> Answer:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        conn.close()
        raise UpstreamError("the answer is not HTTP/1.1")
    if len(parts[1]) != 3 or not b"100" <= parts[1] <= b"599":  # RFC 9110 §15: three digits, 100 to 599
        conn.close()
        raise UpstreamError(f"the answer's status {_shown(parts[1])} is not one of HTTP's (100 to 599)")
    status = int(parts[1])
    if status < 200:  # interim ones were skipped; 101 switches protocols, which no request asked
        conn.close()
        raise UpstreamError(f"the service answered {status}, which no request of this proxy asks for")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        name = name.rstrip(b" \t").lower()  # whitespace before the colon: removed (RFC 9112 §5.1)
        value = value.strip(b" \t")
        if not sep or not _TOKEN.fullmatch(name):
            conn.close()
            raise UpstreamError("a header of the answer is malformed")
        if _CONTROL.search(value):
            conn.close()
            raise UpstreamError(f"the answer's header {_shown(name)} has a control character in its value")
        headers.append((name, value))
    try:
        framing, length, headers = _framing(method, status, headers)
    except UpstreamError:
        conn.close()
        raise
    connection = b",".join(v for k, v in headers if k == b"connection").lower()
    keep = parts[0] == b"HTTP/1.1" and b"close" not in connection
    answer = Answer(status, headers, conn, client, key, framing, length, keep and framing != "close")
    answer._done = framing == "none"
    return answer


def _framing(
    method: str, status: int, headers: list[tuple[bytes, bytes]]
) -> tuple[str, int, list[tuple[bytes, bytes]]]:
    """How the answer's body ends (RFC 9112 §6.3), and its headers with one Content-Length.
    An answer whose end is ambiguous is refused (UpstreamError), as nginx refuses it: two
    different Content-Length values (the client would read one, the proxy the other, and the
    bytes between them would be the next answer on the connection), one that is not a number,
    Content-Length beside Transfer-Encoding (the RFC's sign of response splitting: it lets
    Transfer-Encoding win but says to treat it as an error; refusing is the simpler of the two),
    a transfer coding other than chunked alone (the proxy would pass on bytes that no header
    says how to decode). Identical Content-Length values are one (the RFC allows them), passed
    on once. Checked whatever the method and status: the headers are passed on."""
    values = [v for k, v in headers if k == b"content-length"]
    codings = b",".join(v for k, v in headers if k == b"transfer-encoding")
    if values and codings:
        raise UpstreamError("the answer has both Content-Length and Transfer-Encoding, two ends for its body")
    if codings and codings.strip().lower() != b"chunked":
        raise UpstreamError(
            f"the answer's Transfer-Encoding is {_shown(codings)}, and this proxy reads chunked only"
        )
    lengths: list[int] = []
    for value in values:
        parts = [p.strip() for p in value.split(b",")]
        if not all(p.isdigit() and len(p) <= 18 for p in parts):  # and not more than an exabyte
            raise UpstreamError(f"the answer's Content-Length {_shown(value)} is not a number of bytes")
        lengths += [int(p) for p in parts]
    if len(set(lengths)) > 1:
        other = next(n for n in lengths if n != lengths[0])
        raise UpstreamError(f"the answer has two lengths, Content-Length {lengths[0]} and {other}")
    if len(values) > 1 or (values and values[0] != b"%d" % lengths[0]):  # one header, where the first was
        at = next(i for i, (k, _) in enumerate(headers) if k == b"content-length")
        one = (b"content-length", b"%d" % lengths[0])
        headers = [*headers[:at], one, *[h for h in headers[at:] if h[0] != b"content-length"]]
    if method == "HEAD" or status in (204, 304):
        return "none", 0, headers
    if codings:
        return "chunked", 0, headers
    if lengths:
        return "length", lengths[0], headers
    return "close", 0, headers


def _shown(value: bytes) -> str:
    """A header's value as an error message quotes it: text, and not all of a long one."""
    text = value.decode("latin-1")
    return repr(text if len(text) <= 40 else text[:40] + "...")
