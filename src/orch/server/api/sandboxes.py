"""/v1/sandboxes: sandboxes on demand, held open and driven step by step (docs/sandboxes.md).

A command runs on a thread of its own, not on the route thread pool (a long command must not
hold one of its 40 threads, which every workspace's requests and /healthz share); the route
awaits it. It takes its place among its sandbox's MAX_EXECS before its thread starts (a 429
before any answer began, streamed too), and gives it back when it ends. Streamed (`Accept:
application/x-ndjson`), its output goes out as it comes, at most STREAM_BUFFER bytes ahead of
the client: a slow reader slows the command (its pipe fills), not the server's memory. A client
that goes away stops the command: the answer's end (however early), or the disconnect seen while
a collected answer waits, kills it. A file call is a command too: on a thread of its own, within
its bound (FILE_TIMEOUT), stopped when its client goes away.

What the server holds for its clients is bounded in one place, HELD (CLIENT_MEMORY for the
server, half of it for one workspace): an upload's body, held whole until written; a read's
bytes, until sent; a collected command's output, as it comes until its answer was sent; a
streamed command's room (STREAM_ROOM: its STREAM_BUFFER and the line on its way out), from
before it starts until both its answer and its command ended. Past it, 503.

A create runs on the route thread pool, and a client that goes away before its answer leaves
no sandbox: the disconnect seen while it waits stops it (a wait for memory ends, a sandbox that
started is removed), and one seen when the answer is ready removes the sandbox it made.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from orch.errors import CapacityReached, ClientGone, OrchError
from orch.sandbox.held import ExecResult, Output
from orch.server import body_limit
from orch.server.api.deps import Body, PlatformDep, Reference, WorkspaceDep, api_router
from orch.services import sandboxes
from orch.services.platform import Platform
from orch.services.sandboxes import ExecView, FileView, SandboxView
from orch.sizes import format_size

log = logging.getLogger(__name__)
router = api_router("sandboxes")
NDJSON = "application/x-ndjson"
STREAM_BUFFER = 256 * 2**10  # bytes of a command's output held ahead of a slow reader (4 pipe reads)
STREAM_ROOM = 2 * STREAM_BUFFER  # what a stream takes of HELD: its buffer, and the line being sent
WATCH = 0.5  # seconds between looks at whether the client of a waiting answer went away
CLIENT_MEMORY = 256 * 2**20  # bytes held for clients at once (at least two of sandbox_file_limit)
TRIM_AFTER = 32 * 2**20  # held at once since the last trim, before the C heap is trimmed at zero
T = TypeVar("T")
BINARY = {"schema": {"type": "string", "format": "binary"}}
PATH = Query(
    ...,
    max_length=sandboxes.MAX_PATH,
    description="A path in the sandbox: absolute, or relative to /home/user.",
)


class CreateSandbox(Body):
    environment: Reference | None = Field(
        None,
        max_length=200,
        description="Environment name or id (default: the workspace's default, else python).",
    )
    memory: str | None = Field(None, max_length=40, description="Memory limit such as 512Mi (default 512Mi).")
    cpus: float | None = Field(None, description="CPUs such as 0.5 (default 1).")
    timeout: int | None = Field(None, description="Idle seconds before it is removed (default 600).")
    network: bool = Field(False, description="Reach the internet (never the host or other sandboxes).")
    id: str | None = Field(
        None,
        max_length=200,  # a bound; a longer one than the server makes is told so by chosen_id
        description="The sandbox's id, chosen by the caller as the server makes them (sbx_ and 10 of "
        "0-9a-z without i, l, o, u; default: the server's). A caller whose create was cut short "
        "before it read the answer removes the sandbox by it (DELETE). One taken already: 409.",
    )


class ExecCommand(Body):
    command: list[str] = Field(
        min_length=1, max_length=4096, description="The program and its arguments (no shell: argv)."
    )
    timeout: float | None = Field(None, description="Seconds before it is killed (default 60).")
    env: dict[str, str] | None = Field(None, description="Variables added to the sandbox's.")
    workdir: str | None = Field(
        None, max_length=sandboxes.MAX_PATH, description="Its working directory (default /home/user)."
    )
    stdin: str | None = Field(None, description="Text given on its standard input.")


@router.post("/sandboxes", response_model=SandboxView, status_code=201)
async def create_sandbox(
    body: CreateSandbox, request: Request, platform: PlatformDep, ws: WorkspaceDep
) -> SandboxView:
    """Start a sandbox and hold it open; it answers commands as soon as this returns. A caller
    that goes away before the answer leaves nothing: the sandbox is removed, or never started."""
    gone = threading.Event()
    created = await _watched(
        run_in_threadpool(
            sandboxes.create,
            platform,
            ws,
            environment=body.environment,
            memory=body.memory,
            cpus=body.cpus,
            timeout=body.timeout,
            network=body.network,
            gone=gone.is_set,
            sandbox_id=body.id,
        ),
        request,
        gone,
    )
    if await request.is_disconnected():  # it went away as the answer was made
        await run_in_threadpool(sandboxes.abandon, platform, created.id)
        raise ClientGone("The caller went away before the answer: the sandbox was removed.")
    return created


@router.get("/sandboxes", response_model=list[SandboxView])
def list_sandboxes(
    platform: PlatformDep,
    ws: WorkspaceDep,
    all: bool = Query(False, description="Include removed and failed sandboxes (the newest 500)."),
) -> list[SandboxView]:
    """The workspace's open sandboxes, newest first."""
    return sandboxes.list_sandboxes(platform, ws, include_removed=all)


@router.get("/sandboxes/{sandbox_id}", response_model=SandboxView)
def get_sandbox(sandbox_id: str, platform: PlatformDep, ws: WorkspaceDep) -> SandboxView:
    return sandboxes.show(platform, ws, sandbox_id)


@router.delete("/sandboxes/{sandbox_id}", status_code=204, response_class=Response)
def remove_sandbox(sandbox_id: str, platform: PlatformDep, ws: WorkspaceDep) -> Response:
    """Remove a sandbox and everything in it (one already removed stays as it is)."""
    sandboxes.remove(platform, ws, sandbox_id)
    return Response(status_code=204)


@router.post(
    "/sandboxes/{sandbox_id}/exec",
    response_model=ExecView,
    responses={
        200: {
            "description": "The command's end and its output; with `Accept: application/x-ndjson`, "
            'its output as it comes, one JSON object a line (`{"stream": "stdout", "data": "..."}`), '
            'then `{"exit_code": N, "duration": S, "timed_out": false}` (or an error object).',
            "content": {NDJSON: {"schema": {"type": "string"}}},
        }
    },
)
async def exec_command(
    sandbox_id: str, body: ExecCommand, request: Request, platform: PlatformDep, ws: WorkspaceDep
) -> Response:
    """Run a command in the sandbox as its user, in /home/user unless `workdir` says."""
    command = await run_in_threadpool(
        sandboxes.start_exec,
        platform,
        ws,
        sandbox_id,
        body.command,
        body.timeout,
        body.env,
        body.workdir,
        body.stdin,
    )
    file_limit = int(platform.config.sandbox_file_limit)
    if NDJSON in request.headers.get("accept", ""):
        return _streamed(command, ws, file_limit)
    return await _answered(command, ws, file_limit, request)


async def _answered(command: sandboxes.Exec, ws: str, file_limit: int, request: Request) -> Response:
    """The command's collected answer. The output it keeps is held in HELD as it comes, until
    the answer was sent; past HELD the command is stopped and the answer is 503."""
    room = _Room(ws, file_limit, "command's output")
    stop = threading.Event()

    def take(size: int) -> bool:
        if room.take(size):
            return True
        stop.set()  # nobody will read the rest: the command goes
        return False

    out, err = sandboxes.Capped(take), sandboxes.Capped(take)
    try:
        result = await _collected(command, out, err, request, stop)
        if room.refused:
            refused = room.refused
            raise CapacityReached(f"{refused.message} The command was stopped.", refused.fix)
        view = sandboxes.collected(result, out, err, command.timeout)
        out.parts.clear()  # one copy held while the answer is sent
        err.parts.clear()
        return _Sent(_json(view.model_dump(mode="json")), room.close, media_type="application/json")
    except BaseException:
        room.close()
        raise


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _start(
    command: sandboxes.Exec,
    on_stdout: Output,
    on_stderr: Output,
    stop: threading.Event,
    done: Callable[[ExecResult | None, BaseException | None], object],
) -> None:
    """Run `command` on a thread of its own, in a place among its sandbox's commands taken here
    (LimitReached when none is left: nothing runs) and given back as it ends, before `done`
    gets its result or its error."""
    command.admit()

    def run() -> ExecResult:
        try:
            return command.run(on_stdout, on_stderr, stop.is_set)
        finally:
            command.release()

    what = f"a command in sandbox {command.sandbox_id}"
    _thread(run, done, what, "orch-sandbox-exec", command.platform, command.release)


def _thread(
    work: Callable[[], T],
    done: Callable[[T | None, BaseException | None], object],
    what: str,
    name: str,
    platform: Platform,
    unstarted: Callable[[], None] = lambda: None,
) -> None:
    """`work` on a thread of its own; `done` gets its result, or its error (a bug as a sentence,
    the log has it; the store's trouble as the API answers it, `platform`'s store named).
    `unstarted` undoes what the caller took for it when no thread starts."""

    def go() -> None:
        try:
            result = work()
        except OrchError as e:
            done(None, e)
        except Exception as e:
            if (trouble := platform.store.trouble(e)) is not None:  # the machine's trouble, not a bug: a 503
                log.warning("%s: %s", what, trouble.message)
                done(None, trouble)
                return
            log.exception("%s failed", what)
            done(None, OrchError(f"The call failed in the server: {type(e).__name__}.", _SERVER_LOG))
        else:
            done(result, None)

    try:
        threading.Thread(target=go, name=name, daemon=True).start()
    except BaseException:
        unstarted()
        raise


async def _threaded(work: Callable[[threading.Event], T], what: str, request: Request) -> T:
    """`work(gone)` on a thread of its own, not on the route thread pool, which every
    workspace's requests share; `gone` is set once the client is seen to have gone away (the
    work stops early; its result goes nowhere)."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[T] = loop.create_future()
    gone = threading.Event()

    def settle(result: T | None, error: BaseException | None) -> None:
        if not finished.done():
            if error is not None:
                finished.set_exception(error)
            else:
                finished.set_result(result)  # type: ignore[arg-type]  # None only with an error

    platform = request.app.state.platform
    _thread(lambda: work(gone), lambda r, e: _soon(loop, settle, r, e), what, "orch-sandbox-file", platform)
    return await _watched(finished, request, gone)


_SERVER_LOG = "See the server's log; this is a bug worth reporting."


def _soon(loop: asyncio.AbstractEventLoop, call: Callable[..., Any], *args: Any) -> bool:
    """Call `call` on `loop` from another thread; False when the loop is gone (server stopping)."""
    try:
        loop.call_soon_threadsafe(call, *args)
    except RuntimeError:
        return False
    return True


async def _watched(work: Awaitable[T], request: Request, gone: threading.Event) -> T:
    """`work`'s result, `gone` set as soon as the client is seen to have gone away meanwhile (or
    this answer is cancelled), so that the work stops early; its result then goes nowhere."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait([task], timeout=WATCH)
            if not task.done() and await request.is_disconnected():
                gone.set()
        return task.result()
    except asyncio.CancelledError:
        gone.set()
        raise


async def _collected(
    command: sandboxes.Exec, out: Output, err: Output, request: Request, stop: threading.Event
) -> ExecResult:
    """The command's end; set `stop` to end it early."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[ExecResult] = loop.create_future()

    def settle(result: ExecResult | None, error: BaseException | None) -> None:
        if not finished.done():
            if error is not None:
                finished.set_exception(error)
            else:
                assert result is not None
                finished.set_result(result)

    _start(command, out, err, stop, lambda r, e: _soon(loop, settle, r, e))  # 429 when no place is left
    try:
        return await _watched(finished, request, stop)  # the client went away: the command goes too
    finally:
        stop.set()


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode() + b"\n"


class _Stream(StreamingResponse):
    """A command's streamed answer, which calls `ended` when it ends however it ends (the command
    is stopped): also when the client went away before its first line (its lines are then never
    asked for)."""

    def __init__(self, lines: AsyncIterator[bytes], ended: Callable[[], None]) -> None:
        super().__init__(lines, media_type=NDJSON)
        self.ended = ended

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ended()


def _streamed(command: sandboxes.Exec, ws: str, file_limit: int) -> Response:
    """The command started (a 503 when the server has no room for its stream, a 429 when its
    sandbox runs its most already: no answer began, nothing ran), its output streamed as it
    comes. Its STREAM_ROOM in HELD goes back once both its answer and its command ended."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    buffer = _Buffer(STREAM_BUFFER)
    stop = threading.Event()
    HELD.take(ws, STREAM_ROOM, file_limit, "streamed command")
    ended = _Both(lambda: HELD.give(ws, STREAM_ROOM))

    def emit(stream: str) -> Output:
        def put(data: bytes) -> None:
            if buffer.take(len(data), stop.is_set) and not _soon(loop, queue.put_nowait, (stream, data)):
                stop.set()

        return put

    def done(result: ExecResult | None, error: BaseException | None) -> None:
        ended()
        _soon(loop, queue.put_nowait, ("end", result) if error is None else ("error", error))

    def answered() -> None:  # the command goes too; what waits to be held, at once
        stop.set()
        buffer.close()
        ended()

    try:
        _start(command, emit("stdout"), emit("stderr"), stop, done)
    except BaseException:
        HELD.give(ws, STREAM_ROOM)
        raise
    return _Stream(_lines(queue, buffer, stop, command.timeout), answered)


class _Buffer:
    """The output of one streamed command held for its client: at most `most` bytes (a part
    larger than that alone). A part waits for room, on the command's thread (its pipe fills and
    the command waits on it), until the stream is stopped or closed."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.held = 0
        self.closed = False
        self._changed = threading.Condition()

    def take(self, size: int, stopped: Callable[[], bool]) -> bool:
        """Room for `size` bytes; False (nothing held) once the stream ended."""
        with self._changed:
            while not self.closed and self.held and self.held + size > self.most:
                if stopped():
                    return False
                self._changed.wait(WATCH)
            if self.closed:
                return False
            self.held += size
            return True

    def give(self, size: int) -> None:
        with self._changed:
            self.held -= size
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()


class _Both:
    """Calls `then` at its second call: once both of two ends (a stream's answer and its command)
    came, in either order."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.then = then
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            last = self.calls == 2
        if last:
            self.then()


async def _lines(
    queue: asyncio.Queue[tuple[str, Any]], buffer: _Buffer, stop: threading.Event, timeout: float
) -> AsyncIterator[bytes]:
    """The stream's lines; its last says the command's end, and the timeout it was given (the
    request's, else the default or the shorter lifetime), which a client names when it timed out."""
    decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")}
    try:
        while True:
            kind, value = await queue.get()
            if kind in decoders:
                buffer.give(len(value))
                if text := decoders[kind].decode(value):
                    yield _line({"stream": kind, "data": text})
                continue
            if kind == "error":
                error = value if isinstance(value, OrchError) else OrchError(str(value), _SERVER_LOG)
                yield _line(error.to_dict())
                return
            for stream, decoder in decoders.items():
                if tail := decoder.decode(b"", final=True):
                    yield _line({"stream": stream, "data": tail})
            result: ExecResult = value
            end = {"exit_code": result.exit_code, "duration": round(result.duration, 6)}
            yield _line({**end, "timed_out": result.timed_out, "timeout": timeout})
            return
    finally:
        stop.set()  # the client went away (or the answer ended): the command goes too
        buffer.close()


@router.put(
    "/sandboxes/{sandbox_id}/files",
    response_model=FileView,
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": BINARY}}},
)
async def write_file(
    sandbox_id: str,
    request: Request,
    platform: PlatformDep,
    ws: WorkspaceDep,
    path: str = PATH,
    name: str | None = Query(
        None,
        max_length=255,
        description="The file's own name: when PATH is a directory (or ends in /), the file is "
        "written inside it under this name, as cp does. Without it a directory is refused.",
    ),
) -> FileView:
    """Write the request's body (raw bytes) to a regular file in the sandbox, as the sandbox
    user; parent directories are made (not the directory a PATH ending in / names)."""
    await run_in_threadpool(sandboxes.show, platform, ws, sandbox_id)  # a 404 before any upload
    sandboxes.path_in_sandbox(path)
    sandboxes.file_name(name)
    most = int(platform.config.sandbox_file_limit)
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > most:  # refused at once, not after the upload
        raise sandboxes.too_large(most)
    body = bytearray()
    held = 0
    body_limit.streamed(request)  # bounded here, chunk by chunk
    try:
        async for chunk in request.stream():
            if len(body) + len(chunk) > most:
                raise sandboxes.too_large(most)
            HELD.take(ws, len(chunk), most)
            held += len(chunk)
            body += chunk
        data = bytes(body)
        body.clear()  # one copy held while it is written

        def write(gone: threading.Event) -> FileView:
            return sandboxes.write_file(platform, ws, sandbox_id, path, data, name, gone.is_set)

        return await _threaded(write, f"a file write in sandbox {sandbox_id}", request)
    finally:
        HELD.give(ws, held)


@router.get(
    "/sandboxes/{sandbox_id}/files",
    response_class=Response,
    responses={200: {"description": "The file's bytes.", "content": {"application/octet-stream": BINARY}}},
)
async def read_file(
    sandbox_id: str, request: Request, platform: PlatformDep, ws: WorkspaceDep, path: str = PATH
) -> Response:
    """A regular file's contents (raw bytes), read in the sandbox as the sandbox user."""
    room = _Room(ws, int(platform.config.sandbox_file_limit))

    def read(gone: threading.Event) -> bytes:
        return sandboxes.read_file(platform, ws, sandbox_id, path, gone.is_set, room.take)

    try:
        data = await _threaded(read, f"a file read in sandbox {sandbox_id}", request)
    except BaseException as e:
        room.close()
        if room.refused and isinstance(e, CapacityReached):
            raise room.refused from None  # which room was missing: the workspace's or the server's
        raise
    return _Sent(data, room.close, media_type="application/octet-stream")


class _Room:
    """The room one read's bytes (or a collected command's output) hold in HELD, taken as they
    come (on the read's output thread) and given back once, at `close`; a take after it (a read
    still ending on its thread when its answer went) is refused and holds nothing."""

    def __init__(self, ws: str, file_limit: int, what: str = "copy") -> None:
        self.ws, self.file_limit, self.what = ws, file_limit, what
        self._lock = threading.Lock()
        self.held = 0
        self.closed = False
        self.refused: CapacityReached | None = None

    def take(self, size: int) -> bool:
        with self._lock:
            if self.closed:
                return False
            try:
                HELD.take(self.ws, size, self.file_limit, self.what)
            except CapacityReached as e:
                self.refused = e
                return False
            self.held += size
            return True

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                HELD.give(self.ws, self.held)


class _Sent(Response):
    """An answer that calls `then` once it was sent, or could not be (its client went away)."""

    def __init__(self, content: bytes, then: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.then = then

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.then()


class HeldBytes:
    """The bytes the server holds for its clients: a file copy's (an upload's whole, until it is
    written; a read's, until it is sent), a collected command's output (until its answer was
    sent) and a streamed command's room (STREAM_ROOM, from before it starts until its answer and
    its command ended). At most CLIENT_MEMORY (at least two files
    of the largest size) for all, half of that for one workspace's, so that many copies and
    streams at once cannot take the server's memory, nor one workspace's the room of all the
    others. Past it, a copy or a streamed command is refused with 503 (Retry-After), and a
    collected command is stopped with 503: the room comes back as they end.

    Once all of it is back after much was held (TRIM_AFTER), the C heap is trimmed on a thread of
    its own: glibc keeps what the commands' threads allocated in arenas of their own, and the
    server's memory stayed at its height after the streams had ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = 0
        self.peak = 0  # the most held at once since the last trim
        self._by_workspace: dict[str, int] = {}

    def take(self, ws: str, size: int, file_limit: int, what: str = "copy") -> None:
        """Hold `size` more bytes for workspace `ws`'s `what` ("copy", "streamed command",
        "command's output"), or
        CapacityReached."""
        total = max(CLIENT_MEMORY, 2 * file_limit)
        with self._lock:
            mine = self._by_workspace.get(ws, 0)
            if mine + size > total // 2:
                said = (
                    "This workspace's file copies and commands in progress hold "
                    f"{format_size(mine)} in the server; this {what} would pass the "
                    f"{format_size(total // 2)} a workspace's may hold at once."
                )
            elif self.held + size > total:
                said = (
                    f"The server holds {format_size(self.held)} for file copies and commands in "
                    f"progress; this {what} would pass the {format_size(total)} it holds at once."
                )
            else:
                self.held += size
                self.peak = max(self.peak, self.held)
                self._by_workspace[ws] = mine + size
                return
        raise CapacityReached(
            said,
            "Try it again in a moment, once other copies or commands have ended (or run fewer at once).",
        )

    def give(self, ws: str, size: int) -> None:
        if not size:
            return
        with self._lock:
            self.held -= size
            left = self._by_workspace.get(ws, 0) - size
            if left > 0:
                self._by_workspace[ws] = left
            else:
                self._by_workspace.pop(ws, None)
            trim = self.held == 0 and self.peak >= TRIM_AFTER
            if trim:
                self.peak = 0
        if trim:
            threading.Thread(target=_trim, name="orch-heap-trim", daemon=True).start()


def _trim() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


HELD = HeldBytes()
