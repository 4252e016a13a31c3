"""A small pool of worker processes (worker.py) that answer one request each within a time limit.

A worker that is still busy at its caller's deadline is killed, and the next request gets a
fresh one. Waiting on a worker's pipe releases the GIL, so other threads run meanwhile.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.dockerfile import worker

_SCRIPT = Path(worker.__file__)
# Enough for the server's concurrent validations; each worker holds about 20 MB.
MAX_WORKERS = 4


@dataclass(frozen=True)
class Stopped:
    """No answer: the worker ran out of time (`timed_out`) or its process ended."""

    timed_out: bool
    exit_code: int | None


def run(request: dict[str, Any], seconds: float) -> dict[str, Any] | Stopped | None:
    """A worker's answer to `request` within `seconds`; None when no worker process can be started."""
    return _POOL.run(request, seconds)


class _Dead(Exception):
    """The worker's pipes closed; `sent` tells whether it had the request."""

    def __init__(self, sent: bool) -> None:
        super().__init__()
        self.sent = sent


class _Worker:
    def __init__(self) -> None:
        # The parent's import path, so that the worker loads the same code; -P keeps the
        # script's own directory (this package, with modules named like stdlib ones) off it.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        # A worker that can't even start is this machine's problem, not the text's: it counts
        # as no worker at all (OSError), and the caller does the work itself.
        try:
            ready = self._message(time.monotonic() + worker.START_SECONDS)
        except (_Dead, ValueError):
            ready = None
        if ready != worker.READY:
            self.stop()
            raise OSError(f"the validation worker did not start (exit code {self.proc.returncode})")

    def exchange(self, request: dict[str, Any], deadline: float) -> dict[str, Any] | None:
        """The worker's answer, or None if it did not come by `deadline`."""
        assert self.proc.stdin is not None
        data = memoryview(worker.encode(request))
        try:
            while data:
                data = data[os.write(self.proc.stdin.fileno(), data) :]
        except OSError:
            raise _Dead(sent=False) from None
        return self._message(deadline)

    def _message(self, deadline: float) -> dict[str, Any] | None:
        header = self._read(worker.HEADER.size, deadline)
        body = None if header is None else self._read(worker.HEADER.unpack(header)[0], deadline)
        if body is None:
            return None
        message: dict[str, Any] = json.loads(body)
        return message

    def _read(self, size: int, deadline: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks: list[bytes] = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise _Dead(sent=True)
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class _Pool:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._count = 0
        self._pid = os.getpid()

    def run(self, request: dict[str, Any], seconds: float) -> dict[str, Any] | Stopped | None:
        retried = False
        while True:
            try:
                w = self._acquire()
            except OSError:
                return None
            try:
                answer = w.exchange(request, time.monotonic() + seconds)
            except _Dead as dead:
                self._discard(w)
                if not dead.sent and not retried:
                    retried = True
                    continue  # an idle worker had died: try a fresh one
                return Stopped(timed_out=False, exit_code=w.proc.returncode)
            if answer is None:
                self._discard(w)
                return Stopped(timed_out=True, exit_code=None)
            self._release(w)
            return answer

    def _acquire(self) -> _Worker:
        with self._cond:
            if self._pid != os.getpid():
                # A forked child: the workers are its parent's; it starts its own.
                self._idle, self._count, self._pid = [], 0, os.getpid()
            while not self._idle and self._count >= MAX_WORKERS:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker()
        except OSError:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, w: _Worker) -> None:
        with self._cond:
            self._idle.append(w)
            self._cond.notify()

    def _discard(self, w: _Worker) -> None:
        w.stop()
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        """Stop the idle workers (at exit)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.stop()


_POOL = _Pool()
atexit.register(_POOL.close)
