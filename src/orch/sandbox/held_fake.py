"""Held sandboxes for unit and API tests on the fake engine: nothing runs, a few commands are
played, files live in a dict. Declared against `held.Holder` / `held.Held`, so mypy holds the
fakes to the interface.

The test hooks, which tests read or set:

    FakeHolder.opened     every spec `open` was given, in order
    FakeHolder.sandboxes  every FakeSandbox it opened, by name
    FakeHolder.fail       an error `open` raises (None: it opens)
    FakeHolder.hold       an event `open` waits for (None: it opens at once), as a slow start
    FakeHolder.holding    set once `open` waits on `hold`
    FakeSandbox.behaviour what a command does (see Behaviour); the default plays `echo`,
                          `true`, `false`, `sleep N`, `cat` (stdin to stdout), `pwd` and `env`,
                          and answers 127 to anything else
    FakeSandbox.files     the files written, by absolute path
    FakeSandbox.dirs      its directories (/, /home, /home/user, /tmp and the files' parents)
    FakeSandbox.special   paths of what is no regular file (a pipe, a device): refused
    FakeSandbox.blocking  paths whose file calls block until their timeout or stop, as a pipe
                          put in place after the check would
    FakeSandbox.die()     make its init exit, as if a command killed it

A command still running when its sandbox is removed, or its init exits, ends as the real one
does: killed (137).
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import final

from orch.engine.base import ContainerSpec
from orch.errors import EngineError, InvalidInput, NotFound
from orch.sandbox.held import (
    KILLED,
    NOT_FOUND,
    TIMED_OUT,
    ExecResult,
    Held,
    Holder,
    Places,
    directory_form,
    file_ended,
    file_error,
    no_room_to_read,
)
from orch.sandbox.pump import Output


@dataclass(frozen=True)
class Command:
    """One command as the fake sees it."""

    argv: Sequence[str]
    env: Mapping[str, str]
    workdir: str
    stdin: bytes
    out: Output
    err: Output
    # Sleep this long unless stopped (timeout, cancel); True when it slept to the end.
    sleep: Callable[[float], bool]


Behaviour = Callable[[Command], int]
WRITABLE = ("/home/user/", "/tmp/")  # noqa: S108 - inside the (fake) sandbox


def play(cmd: Command) -> int:
    """The default behaviour: a handful of commands, as coreutils would answer them."""
    name, args = cmd.argv[0], list(cmd.argv[1:])
    if name == "echo":
        cmd.out((" ".join(args) + "\n").encode())
        return 0
    if name in ("true", "false"):
        return int(name == "false")
    if name == "sleep":
        try:
            seconds = float(args[0]) if args else 0.0
        except ValueError:
            cmd.err(b"sleep: invalid time interval\n")
            return 1
        cmd.sleep(min(seconds, 30.0))
        return 0
    if name == "cat":
        cmd.out(cmd.stdin)
        return 0
    if name == "pwd":
        cmd.out((cmd.workdir + "\n").encode())
        return 0
    if name == "env":
        cmd.out("".join(f"{k}={v}\n" for k, v in cmd.env.items()).encode())
        return 0
    cmd.err(f"orch: {name}: command not found\n".encode())
    return NOT_FOUND


@final
class FakeSandbox(Held):
    def __init__(self, spec: ContainerSpec) -> None:
        self.name = spec.name
        self.spec = spec
        self.behaviour: Behaviour = play
        self.files: dict[str, bytes] = {}
        self.dirs = {"/", "/home", "/home/user", "/tmp"}  # noqa: S108 - inside the (fake) sandbox
        self.special: set[str] = set()
        self.blocking: set[str] = set()
        self.commands: list[Sequence[str]] = []
        self.removed = False
        self._alive = True
        self._places = Places()
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        return self._places.taken

    def claim(self, most: int) -> bool:
        return self._places.claim(most)

    def release(self) -> None:
        self._places.release()

    def die(self) -> None:
        self._alive = False

    def alive(self) -> bool:
        return self._alive and not self.removed

    def remove(self) -> str:
        self.removed = True
        return ""

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes = b"",
        timeout: float | None = None,
        on_stdout: Output = lambda _b: None,
        on_stderr: Output = lambda _b: None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ExecResult:
        if not self.alive():
            raise EngineError(f"The sandbox {self.name} is no longer running.", "Create another.")
        began = time.monotonic()
        why: list[str] = []

        def sleep(seconds: float) -> bool:
            if ended := self._sleep(seconds, began, timeout, should_stop):
                why.append(ended)
            return not ended

        with self._lock:
            self.commands.append(list(argv))
        cwd = workdir or self.spec.workdir or "/"
        variables = {**self.spec.env, **(env or {})}
        code = self.behaviour(Command(argv, variables, cwd, stdin, on_stdout, on_stderr, sleep))
        took = time.monotonic() - began
        if why:
            return _ended(why[0], took)
        return ExecResult(code, took)

    def _sleep(
        self, seconds: float, began: float, timeout: float | None, should_stop: Callable[[], bool] | None
    ) -> str:
        """Sleep `seconds`; "" when it slept to the end, else why it was cut: "timeout",
        "cancel" (`should_stop`), "killed" (its sandbox was removed or its init exited: the
        kernel killed the rest)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if timeout is not None and time.monotonic() - began >= timeout:
                return "timeout"
            if should_stop is not None and should_stop():
                return "cancel"
            if self.removed or not self._alive:
                return "killed"
            time.sleep(0.01)
        return ""

    def _file_call(
        self, verb: str, path: str, timeout: float | None, should_stop: Callable[[], bool] | None
    ) -> None:
        """What the real file call's command does before it reads or writes: refuse what is no
        regular file, and block (until its timeout, its stop, or its sandbox's end) on a path
        in `blocking`."""
        if not self.alive():
            raise EngineError(f"The sandbox {self.name} is no longer running.", "Create another.")
        if path in self.special:
            raise file_error(verb, path, f"orch: {path}: Not a regular file", 1)
        if path in self.blocking:
            began = time.monotonic()
            why = self._sleep(3600, began, timeout, should_stop) or "killed"
            result = _ended(why, time.monotonic() - began)
            file_ended(verb, path, result, timeout)
            raise file_error(verb, path, "", result.exit_code)  # killed with its sandbox

    def write_file(
        self,
        path: str,
        data: bytes,
        name: str | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> str:
        target, marked = directory_form(path)
        if target in self.dirs:
            if not name:
                raise file_error("write", path, f"orch: {target}: Is a directory", 1)
            target = posixpath.join(target, name)
        elif marked:
            raise file_error("write", path, f"orch: {target}: No such directory", 1)
        self._file_call("write", target, timeout, should_stop)
        if not target.startswith(WRITABLE) or target in self.dirs:
            said = "Is a directory" if target in self.dirs else "Permission denied"
            raise file_error("write", path, f"sh: 1: cannot create {target}: {said}", 2)
        self.files[target] = data
        parent = posixpath.dirname(target)
        while parent not in self.dirs:
            self.dirs.add(parent)
            parent = posixpath.dirname(parent)
        return target

    def read_file(
        self,
        path: str,
        limit: int,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        take: Callable[[int], bool] | None = None,
    ) -> bytes:
        self._file_call("read", path, timeout, should_stop)
        if path in self.dirs:
            raise file_error("read", path, f"cat: {path}: Is a directory", 1)
        if path not in self.files:
            raise NotFound(f"No file {path} in the sandbox.", "Check the path.")
        if len(self.files[path]) > limit:
            raise InvalidInput(f"{path} is larger than the {limit} bytes a file read may be.", "Read less.")
        if take is not None and not take(len(self.files[path])):
            raise no_room_to_read(path)
        return self.files[path]


def _ended(why: str, took: float) -> ExecResult:
    """A command cut for `why` (see FakeSandbox._sleep), as the real one ends."""
    timed_out = why == "timeout"
    return ExecResult(TIMED_OUT if timed_out else KILLED, took, timed_out, cancelled=why == "cancel")


@final
class FakeHolder(Holder):
    def __init__(self) -> None:
        self.opened: list[ContainerSpec] = []
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.fail: Exception | None = None
        self.hold: threading.Event | None = None
        self.holding = threading.Event()

    def open(self, spec: ContainerSpec) -> FakeSandbox:
        self.opened.append(spec)
        if self.hold is not None:
            self.holding.set()
            self.hold.wait(30)
        if self.fail is not None:
            raise self.fail
        sandbox = FakeSandbox(spec)
        self.sandboxes[spec.name] = sandbox
        return sandbox

    def last(self) -> FakeSandbox:
        """The sandbox opened last."""
        return self.sandboxes[self.opened[-1].name]
