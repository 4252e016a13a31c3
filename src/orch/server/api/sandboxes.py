"""/v1/sandboxes: sandboxes on demand, held open and driven step by step (docs/sandboxes.md).

A command runs on a thread of its own, not on the route thread pool (a long command must not
hold one of its 40 threads); the route awaits it. Streamed (`Accept: application/x-ndjson`), its
output goes out as it comes, at most STREAM_BUFFER chunks ahead of the client: a slow reader
slows the command (its pipe fills), not the server's memory. A client that goes away stops the
command: the stream's end, or the disconnect seen while a collected answer waits, kills it.

A create runs on the route thread pool, and a client that goes away before its answer leaves
no sandbox: the disconnect seen while it waits stops it (a wait for memory ends, a sandbox that
started is removed), and one seen when the answer is ready removes the sandbox it made.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from orch.errors import ClientGone, OrchError
from orch.sandbox.held import ExecResult, Output
from orch.server.api.deps import Body, PlatformDep, Reference, WorkspaceDep
from orch.services import sandboxes
from orch.services.sandboxes import ExecView, FileView, SandboxView

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["sandboxes"])
NDJSON = "application/x-ndjson"
STREAM_BUFFER = 64  # output chunks (up to 64 KiB each) held for a slow reader
WATCH = 0.5  # seconds between looks at whether the client of a waiting answer went away
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
    if NDJSON in request.headers.get("accept", ""):
        return StreamingResponse(_stream(command), media_type=NDJSON)
    out, err = sandboxes.Capped(), sandboxes.Capped()
    result = await _collected(command, out, err, request)
    return JSONResponse(sandboxes.collected(result, out, err).model_dump(mode="json"))


def _start(
    command: sandboxes.Exec,
    on_stdout: Output,
    on_stderr: Output,
    stop: threading.Event,
    done: Callable[[ExecResult | None, BaseException | None], object],
) -> None:
    """Run `command` on a thread of its own; `done` gets its result or its error."""

    def work() -> None:
        try:
            result = command.run(on_stdout, on_stderr, stop.is_set)
        except OrchError as e:
            done(None, e)
        except Exception as e:
            log.exception("a command in sandbox %s failed", command.sandbox_id)
            done(None, OrchError(f"The command failed in the server: {type(e).__name__}.", _SERVER_LOG))
        else:
            done(result, None)

    threading.Thread(target=work, name="orch-sandbox-exec", daemon=True).start()


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


async def _collected(command: sandboxes.Exec, out: Output, err: Output, request: Request) -> ExecResult:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[ExecResult] = loop.create_future()
    stop = threading.Event()

    def settle(result: ExecResult | None, error: BaseException | None) -> None:
        if not finished.done():
            if error is not None:
                finished.set_exception(error)
            else:
                assert result is not None
                finished.set_result(result)

    _start(command, out, err, stop, lambda r, e: _soon(loop, settle, r, e))
    try:
        return await _watched(finished, request, stop)  # the client went away: the command goes too
    finally:
        stop.set()


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode() + b"\n"


async def _stream(command: sandboxes.Exec) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    room = threading.Semaphore(STREAM_BUFFER)
    stop = threading.Event()

    def emit(stream: str) -> Output:
        def put(data: bytes) -> None:
            while not room.acquire(timeout=0.5):
                if stop.is_set():
                    return
            if not _soon(loop, queue.put_nowait, (stream, data)):
                stop.set()

        return put

    def done(result: ExecResult | None, error: BaseException | None) -> None:
        _soon(loop, queue.put_nowait, ("end", result) if error is None else ("error", error))

    decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")}
    _start(command, emit("stdout"), emit("stderr"), stop, done)
    try:
        while True:
            kind, value = await queue.get()
            if kind in decoders:
                room.release()
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
            yield _line({**end, "timed_out": result.timed_out})
            return
    finally:
        stop.set()  # the client went away (or the answer ended): the command goes too


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
    """Write the request's body (raw bytes) to a file in the sandbox, as the sandbox user;
    parent directories are made (not the directory a PATH ending in / names)."""
    await run_in_threadpool(sandboxes.show, platform, ws, sandbox_id)  # a 404 before any upload
    sandboxes.path_in_sandbox(path)
    sandboxes.file_name(name)
    most = int(platform.config.sandbox_file_limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > most:
            raise sandboxes.too_large(most)
    return await run_in_threadpool(sandboxes.write_file, platform, ws, sandbox_id, path, bytes(body), name)


@router.get(
    "/sandboxes/{sandbox_id}/files",
    response_class=Response,
    responses={200: {"description": "The file's bytes.", "content": {"application/octet-stream": BINARY}}},
)
def read_file(sandbox_id: str, platform: PlatformDep, ws: WorkspaceDep, path: str = PATH) -> Response:
    """A file's contents (raw bytes), read in the sandbox as the sandbox user."""
    data = sandboxes.read_file(platform, ws, sandbox_id, path)
    return Response(data, media_type="application/octet-stream")
