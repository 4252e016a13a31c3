"""The proxy's HTTP/1.1 client against a raw local server: interim answers skipped, hop-by-hop
headers (those a Connection header names too) never passed, a kept-alive connection kept only in
step (nothing after the answer, no ambiguous framing)."""

from __future__ import annotations

import asyncio

import pytest

from orch.server import proxy_client
from orch.server.proxy import request_body
from orch.server.proxy_client import Client, UpstreamError
from orch.server.proxy_headers import answer_headers, request_headers
from orch.services.routing import Route
from tests.loop_thread import run_loop

HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _ask_twice(answers: list[bytes]) -> list[tuple[int, bytes]]:
    """Two requests over one kept-alive connection to a server that writes `answers[n]` for the
    n-th request; each one's (status, body)."""
    got = (await _ask([("GET", a) for a in answers]))[0]
    for status, said in got:
        if status == 0:
            raise UpstreamError(said.decode())
    return got


async def _ask(asked: list[tuple[str, bytes]]) -> tuple[list[tuple[int, bytes]], int]:
    """Requests with `asked[n]`'s method to a server that writes `asked[n]`'s bytes for the n-th
    request it reads (on whichever connection), the client's pool kept between them; each one's
    (status, body), or (0, what UpstreamError said), and how many connections the server took."""
    served = iter(a for _, a in asked)
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(next(served))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client, got = Client(), []
    try:
        for n, (method, _) in enumerate(asked):
            try:
                answer = await client.request("c", "127.0.0.1", port, method, f"/{n}", [], None, None)
            except UpstreamError as e:
                got.append((0, str(e).encode()))
                continue
            got.append((answer.status, b"".join([c async for c in answer.body()])))
            answer.release()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    return got, connections


def test_interim_answers_are_skipped_and_the_connection_stays_in_step() -> None:
    got = run_loop(lambda: _ask_twice([HINTS + HINTS + OK, b"HTTP/1.1 100 Continue\r\n\r\n" + OK]))
    assert got == [(200, b"ok"), (200, b"ok")]


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nINJECT!"


@pytest.mark.parametrize(
    ("method", "answer", "got"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n" + INJECTED, (204, b"")),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n" + INJECTED, (304, b"")),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + INJECTED, (200, b"hello")),
        (
            "GET",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n" + INJECTED,
            (200, b"hi"),
        ),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nINJECT!", (200, b"")),
    ],
    ids=["a body on 204", "a body on 304", "beyond Content-Length", "after the last chunk", "a body on HEAD"],
)
def test_bytes_a_service_leaves_after_its_answer_are_never_the_next_answer(
    method: str, answer: bytes, got: tuple[int, bytes]
) -> None:
    """Found by a tester: a body on a 204 or a HEAD answer (http.server's `do_HEAD = do_GET`),
    more than the Content-Length, was read as the answer to the next request on the kept-alive
    connection: another caller's. The connection is closed instead; the answer given stays as it
    was."""
    answers, connections = run_loop(lambda: _ask([(method, answer), ("GET", OK), ("GET", OK)]))
    assert answers == [got, (200, b"ok"), (200, b"ok")]
    assert connections == 2  # the first closed, the second kept for the third request


async def _idle_then_written_to() -> tuple[list[tuple[int, bytes]], int]:
    """Two requests; between them, the server writes an answer nobody asked for on the
    connection the client keeps idle, and the test waits until it is there."""
    connections = 0
    write = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(OK)
                await writer.drain()
                if first:
                    first = False
                    await write.wait()
                    writer.write(INJECTED)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client, got = Client(), []
    try:
        for n in range(2):
            answer = await client.request("c", "127.0.0.1", port, "GET", f"/{n}", [], None, None)
            got.append((answer.status, b"".join([c async for c in answer.body()])))
            answer.release()
            if n == 0:
                [idle] = client._idle[("c", port)]
                write.set()
                for _ in range(1000):  # until the stray answer is in the idle connection (bounded)
                    if idle.reader._buffer:  # type: ignore[attr-defined]
                        break
                    await asyncio.sleep(0.01)
                assert idle.reader._buffer  # type: ignore[attr-defined]
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    return got, connections


def test_a_pooled_connection_the_service_wrote_to_while_idle_is_not_used() -> None:
    """What a service writes on an idle kept-alive connection answers no request: the connection
    is closed when a request would take it, and the request goes on a new one."""
    assert run_loop(_idle_then_written_to) == ([(200, b"ok"), (200, b"ok")], 2)


@pytest.mark.parametrize(
    ("method", "head", "said"),
    [
        ("GET", b"Content-Length: 3\r\nContent-Length: 10", "two lengths, Content-Length 3 and 10"),
        ("HEAD", b"Content-Length: 3, 10", "two lengths, Content-Length 3 and 10"),
        ("GET", b"Content-Length: -5", "Content-Length '-5' is not a number of bytes"),
        ("GET", b"Content-Length: 1e3", "Content-Length '1e3' is not a number of bytes"),
        (
            "GET",
            b"Content-Length: 3\r\nTransfer-Encoding: chunked",
            "both Content-Length and Transfer-Encoding",
        ),
        ("GET", b"Transfer-Encoding: gzip, chunked", "Transfer-Encoding is 'gzip, chunked', and this proxy"),
        ("GET", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "reads chunked only"),
    ],
    ids=["two lengths", "two in one", "negative", "no number", "both", "gzip", "chunked twice"],
)
def test_an_answer_whose_end_is_ambiguous_is_refused_and_its_connection_closed(
    method: str, head: bytes, said: str
) -> None:
    """Found by a tester: two different Content-Length headers were passed on (the client got
    both, then a cut connection, and the server logged a traceback); a negative one, or one
    beside Transfer-Encoding, as it was. Refused (nginx's rule), and the connection closed."""
    bad = b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\nabcdefghij" + INJECTED
    answers, connections = run_loop(lambda: _ask([(method, bad), ("GET", OK)]))
    assert answers[0][0] == 0 and said in answers[0][1].decode(), answers
    assert (answers[1], connections) == ((200, b"ok"), 2)


def test_a_length_said_twice_alike_is_one() -> None:
    """The RFC allows a Content-Length repeated with one value: taken, and passed on once."""

    async def ask() -> list[tuple[bytes, bytes]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 02\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        client = Client()
        try:
            answer = await client.request(
                "c", "127.0.0.1", server.sockets[0].getsockname()[1], "GET", "/", [], None, None
            )
            assert b"".join([c async for c in answer.body()]) == b"ok"
            answer.release()
            return answer.headers
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    assert run_loop(ask) == [(b"content-length", b"2"), (b"x-a", b"1")]


def test_switching_protocols_unasked_is_an_error_not_an_answer() -> None:
    with pytest.raises(UpstreamError, match="answered 101"):
        run_loop(lambda: _ask_twice([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", OK]))


def test_headers_a_connection_header_names_are_hop_by_hop() -> None:
    route = Route("team", "ws_1", "svc_1", "web", public=True, state="running", backends=())
    scope = {
        "headers": [
            (b"connection", b"keep-alive, X-Secret"),
            (b"x-secret", b"s"),
            (b"expect", b"100-continue"),
            (b"x-kept", b"k"),
        ]
    }
    sent = dict(request_headers(scope, route))
    assert b"x-secret" not in sent and b"expect" not in sent and sent[b"x-kept"] == b"k"
    back = answer_headers([(b"Connection", b"x-hop"), (b"x-hop", b"1"), (b"x-end", b"2")])
    assert back == [(b"x-end", b"2")]


def test_the_service_learns_who_asked_and_a_relayed_request_keeps_what_its_server_said() -> None:
    route = Route("team", "ws_1", "svc_1", "web", public=True, state="running", backends=())
    scope = {
        "client": ("203.0.113.9", 5555),
        "scheme": "http",
        "headers": [
            (b"host", b"orch.example:8751"),
            (b"x-forwarded-for", b"1.2.3.4"),  # what the client claims: kept, and followed by the truth
            (b"x-forwarded-proto", b"https"),  # a claim the edge replaces
        ],
    }
    sent = request_headers(scope, route)
    assert dict(sent)[b"x-forwarded-for"] == b"1.2.3.4, 203.0.113.9"
    assert dict(sent)[b"x-forwarded-proto"] == b"http"
    assert dict(sent)[b"x-forwarded-host"] == b"orch.example:8751"
    assert [k for k, _ in sent].count(b"x-forwarded-proto") == 1
    # A node's proxy, behind the cluster's server: the server's values reach the service as they are.
    relayed = {**scope, "client": ("10.0.0.2", 4444), "headers": [*scope["headers"]]}
    assert dict(request_headers(relayed, route, relayed=True))[b"x-forwarded-for"] == b"1.2.3.4"


async def _upstream_sees(
    answer_after: float | None, leave_after: float | None, body: bool = False
) -> tuple[str, bytes]:
    """One request to a server that answers after `answer_after` s (never if None), from a caller
    who leaves after `leave_after` s (never if None); (what the client got, what the server read
    before its connection ended)."""
    read = bytearray()
    ended = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply() -> None:
            if answer_after is not None:
                await asyncio.sleep(answer_after)
                writer.write(OK)

        replying = asyncio.ensure_future(reply())
        while data := await reader.read(65536):
            read.extend(data)
        ended.set()
        replying.cancel()
        writer.close()

    async def gone() -> None:
        await asyncio.sleep(1e9 if leave_after is None else leave_after)

    messages = [{"type": "http.request", "body": b"half", "more_body": True}]

    async def receive() -> dict[str, object]:  # the ASGI server's: the body, then the caller leaving
        if messages:
            return messages.pop(0)
        await gone()
        return {"type": "http.disconnect"}

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client()
    try:
        try:
            answer = await client.request(
                "c",
                "127.0.0.1",
                port,
                "POST" if body else "GET",
                "/",
                [],
                request_body(receive) if body else None,
                None,
                gone,
            )
            got = f"{answer.status} " + b"".join([c async for c in answer.body()]).decode()
            answer.release()
        except proxy_client.ClientLeft:
            got = "left"
        await client.close()
        async with asyncio.timeout(5):  # the server's side ends: the connection was closed
            await ended.wait()
    finally:
        server.close()
        await server.wait_closed()
    return got, bytes(read)


def test_a_caller_who_leaves_while_a_hung_service_is_awaited_closes_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection to a service that never answers is closed when its caller leaves, not held
    for the rest of READ_TIMEOUT (300 s); a slow answer still comes through the watch."""
    monkeypatch.setattr(proxy_client, "WATCH_AFTER", 0.05)
    got, read = run_loop(lambda: _upstream_sees(answer_after=None, leave_after=0.2))
    assert got == "left" and read.startswith(b"GET / HTTP/1.1")
    # An answer later than the first wait, the caller staying: read on from the same head.
    assert run_loop(lambda: _upstream_sees(answer_after=0.3, leave_after=None))[0] == "200 ok"


def test_a_caller_who_leaves_during_its_upload_never_gives_the_service_half_a_body_as_whole() -> None:
    got, read = run_loop(lambda: _upstream_sees(answer_after=None, leave_after=0.1, body=True))
    assert got == "left"
    # One chunk, then the connection ends: never the last chunk, which would make half a body whole.
    assert read.endswith(b"\r\n\r\n4\r\nhalf\r\n")
