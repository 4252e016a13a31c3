"""One runtime process's standard streams and its exit, moved in the calling thread.

A run's sandbox (`runc run`) and a held sandbox's command (`runc exec`) are both a runtime
process with three pipes: its input is written as the process takes it, its output and errors
handed on as they come, and its exit seen at once (a pidfd, where the kernel has them), all with
one poll(2) in the thread that follows it, no thread per stream. A timeout or a cancel calls
`kill`; the streams keep moving while the runtime takes its sandbox down.

Until the runtime says the process started (its pid file), with `hold_back`, stderr is held
back: what comes before may be the runtime's own error, which is no output of the command. The
pid file's arrival wakes the poll too (an inotify watch on its directory), so the start is seen
at once without looking for the file every few milliseconds; where inotify is not to be had,
it is looked for every 2 ms.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from inotify_simple import INotify
from inotify_simple import flags as inotify

Output = Callable[[bytes], None]
CHUNK = 65536
KILL_GRACE = 10.0  # seconds the runtime gets to end after `kill` before it is killed itself
_CHECK = 0.05  # seconds between checks of the timeout and cancels once the process runs
_STARTING = 0.002  # seconds between looks for the pid file until the process runs, unwatched


class Pump:
    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        stdin: bytes,
        out: Output,
        err: Output,
        pid_file: Path,
        *,
        hold_back: bool = False,
    ) -> None:
        assert proc.stdin and proc.stdout and proc.stderr
        self.proc, self.pid_file = proc, pid_file
        self.out, self.err = out, err
        self.held_back = b""
        self.released = not hold_back
        self.started = 0.0  # monotonic time the pid file was first seen
        self.stdin = memoryview(stdin)
        self.selector = selectors.DefaultSelector()
        self.streams: dict[int, IO[bytes]] = {}
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ)
            self.streams[stream.fileno()] = stream
        if stdin:
            os.set_blocking(proc.stdin.fileno(), False)
            self.selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        self.pidfd: int | None = None
        with contextlib.suppress(OSError):  # gone already, or no pidfds: its exit is polled
            self.pidfd = os.pidfd_open(proc.pid)
            self.selector.register(self.pidfd, selectors.EVENT_READ)
        # The runtime writes its pid file aside and renames it into place (runc), or writes it
        # in place: either wakes the poll. Watched from before the first look for it.
        self.watch: INotify | None = None
        with contextlib.suppress(OSError):  # no inotify (or no room for a watch): looked for
            self.watch = INotify(nonblocking=True)
            self.watch.add_watch(pid_file.parent, inotify.CREATE | inotify.MOVED_TO)
            self.selector.register(self.watch, selectors.EVENT_READ)
        if self.watch is not None and self.watch.fileno() not in self.selector.get_map():
            self.watch.close()  # made, but not watching
            self.watch = None

    def run(
        self, deadline: float | None, should_stop: Callable[[], bool] | None, kill: Callable[[], None]
    ) -> str:
        """Move the streams until the runtime's process exits (reaped); "timeout" or "cancel"
        when `kill` was called for that, else ""."""
        why = ""
        killed_at = 0.0
        checked = 0.0
        while True:
            if self._move(_STARTING if not self.started and self.watch is None else _CHECK):
                self._drain()
                return why
            now = time.monotonic()
            if not self.started and self.pid_file.exists():
                self.started = now
                self.release()
                self._unwatch()
            if why:
                if now - killed_at > KILL_GRACE:  # the runtime itself hangs
                    self.proc.kill()
                continue
            if deadline is not None and now >= deadline:
                why = "timeout"
            elif should_stop is not None and now - checked >= _CHECK:
                checked = now
                if should_stop():
                    why = "cancel"
            if why:
                killed_at = now
                kill()

    def _move(self, wait: float) -> bool:
        """Move what is ready within `wait` seconds; True once the process has exited."""
        for key, _mask in self.selector.select(wait):
            stream = key.fileobj
            if stream is self.proc.stdin:
                self._feed()
            elif isinstance(stream, int):  # the pidfd
                self.selector.unregister(stream)
            elif self.watch is not None and key.fd == self.watch.fileno():
                self.watch.read(timeout=0)  # what came: the look for the pid file follows
            else:
                self._read(stream.fileno())
        return self.proc.poll() is not None

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        try:
            written = os.write(self.proc.stdin.fileno(), self.stdin[:CHUNK])
        except BlockingIOError:
            return
        except OSError:  # the process closed its stdin (or exited)
            written = len(self.stdin)
        self.stdin = self.stdin[written:]
        if not self.stdin:
            self.selector.unregister(self.proc.stdin)
            self.proc.stdin.close()

    def _read(self, fd: int) -> bool:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(self.streams[fd])
            return False
        assert self.proc.stderr is not None
        if fd == self.proc.stderr.fileno() and not self.released:
            self.held_back += data
        else:
            (self.out if fd != self.proc.stderr.fileno() else self.err)(data)
        return True

    def _drain(self) -> None:
        """What the pipes hold now that the runtime's process has exited: a process the command
        left running (in a held sandbox) may keep them open, so read what is there, not to their
        end."""
        for fd in list(self.streams):
            if fd in {k.fd for k in self.selector.get_map().values()}:
                for _ in range(1024):
                    if not self._read(fd):
                        break

    def release(self) -> None:
        """The process started: what stderr held back is its own."""
        self.released = True
        if self.held_back:
            self.err(self.held_back)
            self.held_back = b""

    def _unwatch(self) -> None:
        if self.watch is not None:
            self.selector.unregister(self.watch)
            self.watch.close()
            self.watch = None

    def close(self) -> None:
        self._unwatch()
        self.selector.close()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
