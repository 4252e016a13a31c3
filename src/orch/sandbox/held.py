"""A sandbox held open: started once like a run's sandbox, then driven step by step (commands,
files) until it is removed. What sandboxes on demand stand on (services/sandboxes.py).

It is a run's bundle, made by `runc.Launcher.prepare` (the same root, limits, user, capabilities,
seccomp filter, masked paths, cgroups and network), started detached (`runc run --detach`). Its
PID 1 is catatonit in pause mode (`/run/orch-init -P`, the binary a run's init is): it waits for
nothing but signals, needs nothing from the image, and reaps what commands leave behind.

A command is `runc exec --process FILE`: FILE is the config's own process (user, capabilities,
noNewPrivileges, rlimits, umask) with the command's argv, environment and working directory, and
runc puts it in the container's namespaces and cgroups under its seccomp filter, as PID 1 is.
Its output is read as it comes; a timeout or a cancel kills it: runc makes each command's process
the leader of a session of its own, so its process group is killed, with every process it started
that is still in the group (orphans reparented to PID 1 included) or still below it. A process
that left both (setsid, then its parent exited) is left running, as a background process would
be, until the sandbox goes. Under gVisor the command's processes are not host processes: its
process and those below it are killed through `runsc kill --pid`; and runsc, which writes its
own errors to its stderr (`waiting on pid ...` when the sandbox ends under a command), gets the
command's pipes as fds 3-5 (`--pass-fd`), its own stdout and stderr going to a file the log
takes.

Files go in and out through commands too, run as the sandbox user (`cat`), never through the
host's view of the root: a symlink in the sandbox then resolves inside it, and the sandbox user's
permissions hold. Only regular files (and directories, for a write's name): a pipe or a device
is refused before it is opened. A file call is a command like any other for the caller's bound
and stop, and for the places of the commands running at once (`claim`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orch.engine.base import ContainerSpec
from orch.engine.network import Network
from orch.errors import CapacityReached, ClientGone, Conflict, EngineError, InvalidInput, NotFound
from orch.sandbox import netns, oci, runc
from orch.sandbox.launcher import Isolation
from orch.sandbox.pump import Output as Output  # what a command's output goes to
from orch.sandbox.pump import Pump
from orch.sizes import format_size

log = logging.getLogger(__name__)
_FIX = "Remove the sandbox and create another; the server's log has the details."
# Exit codes a shell gives a command it cannot find or cannot execute.
NOT_FOUND, NOT_EXECUTABLE = 127, 126
TIMED_OUT = 124  # as `timeout` exits when it stopped the command
KILLED = 137  # 128 + SIGKILL: a cancelled command


# runc (not runsc) copies a command's streams through pipes of its own and waits for their end,
# which a process the command left running in the background holds open: the command would not
# end with its process. So runc gets our pipes also as fds 3-5 (`--preserve-fds`), which it hands
# to the process as they are, and the process (the image's /bin/sh, exec'ing the command at once,
# same pid) makes them its streams. Without a shell in the image, runc's pipes are used. A
# command it cannot find or execute is said as `orch: NAME: REASON` (a failed exec would be
# the shell's `sh: 1: exec: NAME: ...`).
_HANDOVER = (
    "/bin/sh",
    "-c",
    'command -v -- "$1" >/dev/null 2>&1 || { echo "orch: $1: command not found" >&5; exit 127; }; '
    'case $1 in */*) if [ -d "$1" ]; then echo "orch: $1: Is a directory" >&5; exit 126; '
    'elif [ ! -x "$1" ]; then echo "orch: $1: Permission denied" >&5; exit 126; fi;; esac; '
    'exec "$@" <&3 >&4 2>&5 3<&- 4>&- 5>&-',
    "orch",
)
# Under gVisor the command writes through the output relay (sandbox/relay.py), which copies its
# output to our pipes whole: gVisor cuts a large write to them short.
_RELAYED = (*_HANDOVER[:2], _HANDOVER[2].replace('exec "$@"', f'exec {oci.RELAY} "$@"'), *_HANDOVER[3:])


def _ignore(_data: bytes) -> None:
    pass


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    duration: float  # seconds from the start of the command to its end
    timed_out: bool = False
    cancelled: bool = False


class Held(Protocol):
    """One sandbox held open. Every method may be called from several threads at once."""

    name: str

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes = b"",
        timeout: float | None = None,
        on_stdout: Output = _ignore,
        on_stderr: Output = _ignore,
        should_stop: Callable[[], bool] | None = None,
    ) -> ExecResult:
        """Run `argv` in the sandbox to its end (or its timeout, or until `should_stop`), its
        output handed to the callbacks as it comes. A command that cannot start (not found, not
        executable) ends as a shell's would: 127 or 126, the reason on stderr."""
        ...

    def write_file(
        self,
        path: str,
        data: bytes,
        name: str | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> str:
        """Write `data` to the absolute `path` as the sandbox user (parent directories made);
        return the path written. A directory at `path` (or a `path` ending in / or /.) takes
        the file as `name` inside it, as `cp` does: without a name it is refused, and a
        directory that does not exist is NotFound, nothing made. Anything there but a regular
        file or a directory (a pipe, a device, a socket) is refused before it is opened.
        NotFound / InvalidInput for what the sandbox refuses, InvalidInput past `timeout`
        seconds, ClientGone once `should_stop` (the writer is killed either way)."""
        ...

    def read_file(
        self,
        path: str,
        limit: int,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        take: Callable[[int], bool] | None = None,
    ) -> bytes:
        """The contents of the absolute `path`, read as the sandbox user; InvalidInput beyond
        `limit` bytes, or for anything but a regular file (refused before it is opened: a pipe
        or a device would block or never end), NotFound when there is no such file;
        InvalidInput past `timeout` seconds, ClientGone once `should_stop`. `take(n)` is asked
        for room for each n bytes read as they come; once it says no, the read stops:
        CapacityReached."""
        ...

    def claim(self, most: int) -> bool:
        """Take a place among the `most` commands (file calls included) that may run in it at
        once, checked and counted in one step; False when all are taken. `release` gives it
        back."""
        ...

    def release(self) -> None:
        """Give back a place `claim` took."""
        ...

    @property
    def busy(self) -> int:
        """Places taken now: the commands and file calls running in it."""
        ...

    def alive(self) -> bool:
        """Whether its init still runs."""
        ...

    def remove(self) -> str:
        """Remove everything of it; return what could not be removed ("" when clean)."""
        ...


class Places:
    """The places of the commands (file calls included) running in one sandbox at once: checked
    and counted under one lock, so that requests arriving together cannot all pass the check
    before any is counted (`Held.claim`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0

    def claim(self, most: int) -> bool:
        with self._lock:
            if self.taken >= most:
                return False
            self.taken += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.taken = max(0, self.taken - 1)


class Holder(Protocol):
    """What starts sandboxes held open (one per isolation runtime)."""

    def open(self, spec: ContainerSpec) -> Held:
        """Start `spec`'s sandbox and hold it open (its argv is ignored: PID 1 waits)."""
        ...


@dataclass
class Registry:
    """The sandboxes one server holds open, by id, and what opens them, by isolation runtime: a
    holder given here (tests' fakes), else one on the platform's launcher for that runtime."""

    holders: dict[Isolation, Holder] = field(default_factory=dict)
    # Held while a workspace's open sandboxes are counted and a new one is stored.
    admission: threading.Lock = field(default_factory=threading.Lock)
    _open: dict[str, Held] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def holder(self, isolation: Isolation, launcher: object) -> Holder | None:
        with self._lock:
            if isolation not in self.holders and isinstance(launcher, runc.Launcher):
                self.holders[isolation] = RuncHolder(launcher)
            return self.holders.get(isolation)

    def add(self, sandbox_id: str, sandbox: Held) -> None:
        with self._lock:
            self._open[sandbox_id] = sandbox

    def get(self, sandbox_id: str) -> Held | None:
        with self._lock:
            return self._open.get(sandbox_id)

    def pop(self, sandbox_id: str) -> Held | None:
        with self._lock:
            return self._open.pop(sandbox_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._open)


@dataclass
class RuncHolder:
    """Held sandboxes on a runc (or runsc) `Launcher`: the launcher's bundles, pools and sweep."""

    launcher: runc.Launcher

    def open(self, spec: ContainerSpec) -> RuncSandbox:
        launcher = self.launcher
        bundle = launcher.state / "sandboxes" / spec.name
        runc._private(launcher.state)
        if bundle.exists():
            launcher.teardown(spec.name)  # the same name's leftover: its owner is gone
        ns = netns.EMPTY
        try:
            if spec.network is not Network.NONE:
                ns = launcher.pool(spec.network).acquire()
            launcher.prepare(spec, bundle, ns)
            config = json.loads((bundle / "config.json").read_text())
            config["process"]["args"] = [oci.INIT, "-P"]  # catatonit waits: nothing of the image runs
            (bundle / "config.json").write_text(json.dumps(config))
            command = launcher._command(spec, bundle, ns)
            command.insert(command.index("run") + 1, "--detach")
            _start(command, bundle, launcher.runtime)
            pid = int((bundle / "pid").read_text().strip())
            shell = os.path.lexists(Path(config["root"]["path"], "bin", "sh"))  # before anything ran
            process = config["process"]
            relay = any(m["destination"] == oci.RELAY for m in config["mounts"])
            return RuncSandbox(
                spec.name, launcher, spec, bundle, ns, process, pid, _started(pid), shell, relay
            )
        except BaseException:
            if problems := launcher.teardown(spec.name):
                log.warning("%s", problems)
            if ns.name:
                launcher.pool(spec.network).release(ns)
            raise


def _start(command: list[str], bundle: Path, runtime: str) -> None:
    """`runc run --detach`: it returns once PID 1 runs. PID 1 inherits its standard streams, so
    its stderr is a pipe read only until it returns, then closed (nothing else keeps it)."""
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=bundle,
        )
    except FileNotFoundError:
        raise EngineError(f"The OCI runtime {runtime} is not installed.", runc._FIX) from None
    assert proc.stderr is not None
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = -1
    os.set_blocking(proc.stderr.fileno(), False)
    try:
        said = (proc.stderr.read() or b"").decode("utf-8", "replace").strip()
    except OSError:
        said = ""
    proc.stderr.close()
    if code != 0 or not (bundle / "pid").exists():
        last = said.splitlines()[-1] if said else f"{runtime} exited with {code}"
        raise EngineError(f"The sandbox could not start: {_runtime_message(last)}", runc._FIX)


def _take(path: Path) -> bytes:
    """The contents of `path`, which goes ("" when there is none)."""
    try:
        return path.read_bytes()
    except OSError:
        return b""
    finally:
        path.unlink(missing_ok=True)


def _runtime_message(line: str) -> str:
    """runc's logrus line (`time=... level=error msg="..."`) as its message alone."""
    found = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
    return found[1].replace('\\"', '"') if found else line


_PF_EXITING = 0x4  # a process's flag (its /proc stat's 9th field) from the start of its exit


def _started(pid: int) -> str:
    """When host process `pid` started (its /proc stat's 22nd field), which tells it from a later
    process that got the same number; "" when it is gone, a zombie, or exiting. An init that
    exits kills the rest of its pid namespace before it is a zombie, so a command it killed
    ends while its init is still exiting: then already no longer alive."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        exiting = int(fields[6]) & _PF_EXITING
    except (OSError, IndexError, ValueError):
        return ""
    return fields[19] if fields[0] != "Z" and not exiting else ""


@dataclass
class RuncSandbox:
    """A held sandbox on runc or runsc."""

    name: str
    launcher: runc.Launcher
    spec: ContainerSpec
    bundle: Path
    ns: netns.Netns
    process: Mapping[str, Any]  # the config's process: what every command's process copies
    pid: int  # PID 1's host pid (runsc: its sandbox process)
    started: str  # and when that process started
    shell: bool = True  # whether its image has /bin/sh (commands' streams are handed over by it)
    relay: bool = False  # whether the output relay is bound in (gVisor): commands run under it
    _places: Places = field(default_factory=Places, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _removed: bool = field(default=False, init=False)
    _dead: bool = field(default=False, init=False)  # found not running by the runtime

    @property
    def busy(self) -> int:
        return self._places.taken

    def claim(self, most: int) -> bool:
        return self._places.claim(most)

    def release(self) -> None:
        self._places.release()

    @property
    def gvisor(self) -> bool:
        return self.launcher.gvisor

    def _base(self) -> list[str]:
        return self.launcher.base(self.ns)  # the flags it was started with

    def alive(self) -> bool:
        return not (self._removed or self._dead) and _started(self.pid) == self.started != ""

    def _running(self) -> bool:
        """Whether the runtime itself says it runs (gVisor's kernel can die while its process
        lingers); a sandbox found not running is dead from then on."""
        if self.alive():
            state = subprocess.run(
                [*self._base(), "state", self.name], capture_output=True, text=True, timeout=30, check=False
            )
            try:
                self._dead = json.loads(state.stdout or "{}").get("status") != "running"
            except ValueError:
                self._dead = True
        return self.alive()

    def remove(self) -> str:
        with self._lock:
            if self._removed:
                return ""
            self._removed = True
        problems = self.launcher.teardown(self.name)
        if self.ns.name:
            self.launcher.pool(self.spec.network).release(self.ns)
        return problems

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes = b"",
        timeout: float | None = None,
        on_stdout: Output = _ignore,
        on_stderr: Output = _ignore,
        should_stop: Callable[[], bool] | None = None,
    ) -> ExecResult:
        if self._removed:
            raise EngineError(f"The sandbox {self.name} was removed.", _FIX)
        return self._exec(argv, env, workdir, stdin, timeout, on_stdout, on_stderr, should_stop)

    def _exec(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        workdir: str | None,
        stdin: bytes,
        timeout: float | None,
        on_stdout: Output,
        on_stderr: Output,
        should_stop: Callable[[], bool] | None,
    ) -> ExecResult:
        if not argv:
            raise InvalidInput("The command is empty.", "Give the program to run and its arguments.")
        counted = self._processes()
        if counted is not None and counted[0] >= counted[1]:
            raise self._process_limit()  # runc would fail, said as its own raw error
        kills = self._oom_kills()
        variables = dict(item.partition("=")[::2] for item in self.process["env"])
        variables.update(env or {})
        handed = self.shell
        process = {
            **self.process,
            "terminal": False,
            "args": [*(_RELAYED if self.relay else _HANDOVER), *argv] if handed else list(argv),
            "env": [f"{k}={v}" for k, v in variables.items()],
            "cwd": workdir or self.process["cwd"],
        }
        token = secrets.token_hex(6)
        spec_file = self.bundle / f"exec-{token}.json"
        pid_file = self.bundle / f"exec-{token}.pid"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the variables
        with os.fdopen(fd, "w") as f:
            json.dump(process, f)
        said_file = self.bundle / f"exec-{token}.said"  # runsc's own words, apart from the command's
        aside = handed and self.gvisor
        command = [*self._base(), "exec"]
        if handed:
            passed = [a for n in (3, 4, 5) for a in ("--pass-fd", f"{n}:{n}")]
            command += passed if aside else ["--preserve-fds", "3"]
        command += ["--process", str(spec_file)]
        command += ["--internal-pid-file" if self.gvisor else "--pid-file", str(pid_file), self.name]
        if handed:  # our pipes as the runtime's fds 3-5 too, and nothing on its stdin to copy
            script = 'exec "$@" 3<&0 4>&1 5>&2 0</dev/null'
            if aside:  # runsc writes its errors to its own stderr: to a file ($0), not the command's
                script += ' >"$0" 2>&1'
            command = ["/bin/sh", "-c", script, str(said_file) if aside else "orch-exec", *command]
        began = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # runc and what it starts on the host: one group to kill
            )
        except FileNotFoundError:
            spec_file.unlink(missing_ok=True)
            raise EngineError(
                f"The OCI runtime {self.launcher.runtime} is not installed.", runc._FIX
            ) from None
        pump = Pump(proc, stdin, on_stdout, on_stderr, pid_file, hold_back=True)
        why = ""
        try:
            why = pump.run(
                deadline=None if timeout is None else began + timeout,
                should_stop=should_stop,
                kill=lambda: self._kill(proc, pid_file),
            )
        finally:
            if proc.poll() is None:  # unwound (the caller's thread was interrupted)
                self._kill(proc, pid_file)
                proc.kill()
                proc.wait()
            pump.close()
            spec_file.unlink(missing_ok=True)
            started = pid_file.exists()
            pid_file.unlink(missing_ok=True)
            said = _take(said_file) if aside else b""
        duration = time.monotonic() - began
        code = proc.returncode
        if not started and code != 0 and not why:
            refused = counted[2] if counted is not None else None
            return self._not_started(
                said or pump.held_back, code, process["cwd"], argv, on_stderr, duration, refused
            )
        if said.strip():  # the runtime's own (its sandbox ended under the command, ...): the log's
            text = said.decode("utf-8", "replace").strip()
            log.info("%s on a command in %s (exit %s): %s", self.launcher.runtime, self.name, code, text)
        if started:
            pump.release()
        if started and code == KILLED and not why and kills is not None and (self._oom_kills() or 0) > kills:
            # The kernel's kill at the memory limit, not the command's own end (its 137 alone
            # would read as either): said after its output, as a run says it.
            limit = format_size(self.spec.memory_bytes or 0)
            on_stderr(f"orch: killed: the sandbox's memory limit ({limit}) was reached\n".encode())
        if why:
            code = TIMED_OUT if why == "timeout" else KILLED
        return ExecResult(code, duration, timed_out=why == "timeout", cancelled=why == "cancel")

    def _not_started(
        self,
        said: bytes,
        code: int,
        cwd: str,
        argv: Sequence[str],
        on_stderr: Output,
        duration: float,
        refused: int | None = None,
    ) -> ExecResult:
        """The runtime could not start the command: a shell's answer for a command it cannot find
        or execute, a sentence for the rest. At the process limit (all its processes taken, or a
        fork refused since the command began, `refused` then) runc says it in several ways
        (`resource temporarily unavailable`, `read init-p: connection reset by peer`, ...): the
        limit is said, whatever runc said."""
        text = _runtime_message(said.decode("utf-8", "replace").strip().splitlines()[-1] if said else "")
        lowered = text.lower()
        if "cwd" in lowered or "working directory" in lowered:
            raise InvalidInput(
                f"The working directory {cwd} is not usable in the sandbox ({text.rsplit(': ', 1)[-1]}).",
                "Create it first (e.g. run `mkdir -p DIR`), or pass another working directory.",
            )
        if (
            "executable file not found" in lowered
            or "error finding executable" in lowered
            or ("no such file or directory" in lowered and "exec" in lowered)
        ):
            on_stderr(f"orch: {argv[0]}: command not found\n".encode())
            return ExecResult(NOT_FOUND, duration)
        if "permission denied" in lowered and "exec" in lowered:
            on_stderr(f"orch: {argv[0]}: Permission denied\n".encode())
            return ExecResult(NOT_EXECUTABLE, duration)
        if not self._running():
            raise EngineError(f"The sandbox {self.name} is no longer running.", _FIX)
        if "resource temporarily unavailable" in lowered or self._at_process_limit(refused):
            raise self._process_limit()
        log.warning(
            "%s could not start a command in %s (exit %s): %s",
            self.launcher.runtime,
            self.name,
            code,
            said.decode("utf-8", "replace").strip() or "it said nothing",
        )
        raise EngineError(f"The command could not start in the sandbox: {text or f'exit {code}'}.", _FIX)

    def _kill(self, proc: subprocess.Popen[bytes], pid_file: Path) -> None:
        """Kill the command's processes (and the runtime's own for it)."""
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid:
            if self.gvisor:
                self._kill_gvisor(pid)
            else:
                kill_tree(pid, _namespace(self.pid), members=self._members)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _members(self) -> set[int] | None:
        """The host processes in the sandbox's cgroup (every command's is: `runc exec` puts it
        there); None when its cgroup cannot be read."""
        try:
            listed = (runc.sandbox_cgroup(self.name, "pids") / "cgroup.procs").read_text()
        except OSError:
            return None
        return {int(p) for p in listed.split()}

    def _processes(self) -> tuple[int, int, int] | None:
        """The sandbox's processes now, its pids cgroup's limit, and how many forks that limit
        refused so far (pids.events' max): its own cgroup's counters. None under gVisor (its
        kernel enforces the limit; the cgroup counts its own threads), without a limit, or when
        they cannot be read."""
        if self.gvisor or not self.spec.pids:
            return None
        folder = runc.sandbox_cgroup(self.name, "pids")
        try:
            limit = (folder / "pids.max").read_text().strip()
            current = int((folder / "pids.current").read_text())
            events = dict(line.split() for line in (folder / "pids.events").read_text().splitlines())
            return current, int(limit), int(events.get("max", 0))
        except (OSError, ValueError):
            return None

    def _oom_kills(self) -> int | None:
        """How many processes the kernel killed at the sandbox's memory limit so far: its own
        memory cgroup's count (v1's memory.oom_control, v2's memory.events; a parent's does not
        count its children's on v1). None under gVisor (its kernel is what the limit kills) or
        when it cannot be read."""
        if self.gvisor:
            return None
        folder = runc.sandbox_cgroup(self.name, "memory")
        for file in ("memory.oom_control", "memory.events"):
            try:
                fields = dict(line.split() for line in (folder / file).read_text().splitlines())
                return int(fields["oom_kill"])
            except (OSError, ValueError, KeyError):
                continue
        return None

    def _at_process_limit(self, refused_before: int | None = None) -> bool:
        """Whether the sandbox is at its process limit: all its processes taken, or (with
        `refused_before`, the count of refused forks when a command began) a fork refused since."""
        now = self._processes()
        if now is None:
            return False
        current, limit, refused = now
        return current >= limit or (refused_before is not None and refused > refused_before)

    def _process_limit(self) -> Conflict:
        return Conflict(
            f"The sandbox is at its process limit ({self.spec.pids}): no command can start.",
            "Wait for its processes to end, or remove the sandbox and create another.",
        )

    def _kill_gvisor(self, pid: int) -> None:
        """gVisor's processes are its own: `runsc ps` names them (with their parents), `runsc
        kill --pid` kills one; the command's process and those below it, stopped first."""
        listed = subprocess.run(
            [*self._base(), "ps", self.name], capture_output=True, text=True, timeout=30, check=False
        )
        parents: dict[int, int] = {}
        for line in listed.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1].isdigit() and fields[2].isdigit():
                parents[int(fields[1])] = int(fields[2])
        doomed = _below(pid, parents)
        for sig in ("STOP", "KILL"):
            for p in doomed:
                subprocess.run(
                    [*self._base(), "kill", "--pid", str(p), self.name, sig],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )

    # Files: commands as the sandbox user. `--` ends options; the path is an argument, never text
    # in a shell script.

    def write_file(
        self,
        path: str,
        data: bytes,
        name: str | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> str:
        path = lexical(path)
        out, err = _Collected(), _Collected()
        where, marked = directory_form(path)
        part = secrets.token_hex(6)  # the name of what is written, until it is complete
        argv = ["/bin/sh", "-c", _WRITE, "orch-write", where, name or "", "1" if marked else "", part]
        result = self.exec(
            argv, stdin=data, timeout=timeout, on_stdout=out, on_stderr=err, should_stop=should_stop
        )
        if result.timed_out or result.cancelled:
            self._unwrite(where, part)
        file_ended("write", path, result, timeout)
        if result.exit_code != 0:
            raise file_error("write", path, err.text(), result.exit_code, runc.writable_bytes(self.spec))
        return out.data().decode("utf-8", "surrogateescape")

    def _unwrite(self, where: str, part: str) -> None:
        """Remove what a write that was killed (its timeout, its caller gone) had written under
        its temporary name; best effort (the sandbox may be going too)."""
        argv = ["/bin/sh", "-c", _UNWRITE, "orch-unwrite", where, part]
        with contextlib.suppress(EngineError, Conflict, OSError, subprocess.SubprocessError):
            self.exec(argv, timeout=5)

    def read_file(
        self,
        path: str,
        limit: int,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        take: Callable[[int], bool] | None = None,
    ) -> bytes:
        path = lexical(path)
        out, err = _Collected(limit, take, sized=True), _Collected()
        stop = out.ended if should_stop is None else lambda: out.ended() or should_stop()
        argv = ["/bin/sh", "-c", _READ, "orch-read", path]
        result = self.exec(argv, timeout=timeout, on_stdout=out, on_stderr=err, should_stop=stop)
        if out.refused:
            raise no_room_to_read(path)
        if out.full():
            raise InvalidInput(
                f"{path} is larger than the {format_size(limit)} a file read may be.",
                "Read it in parts (e.g. exec `split` or `tail -c`), or compress it first.",
            )
        file_ended("read", path, result, timeout)
        if result.exit_code != 0:
            raise file_error("read", path, err.text(), result.exit_code)
        return out.data()


# A file call's path names a regular file, a directory, or nothing yet: anything else (a pipe,
# a device, a socket) is refused before it is opened, since opening or reading it may block or
# never end. `test` stats the path (a symlink is followed, inside the sandbox) without opening it.
_SPECIAL = (
    '[ -e "$1" ] && [ ! -f "$1" ] && [ ! -d "$1" ] && { echo "orch: $1: Not a regular file" >&2; exit 1; }; '
)

# A symlink that leads to no file (its target, or a directory on the way to it, does not exist; or
# a loop) is said on stderr, `orch: PATH: Symlink to TARGET`, before the command's own error (the
# last line, the reason): so a missing file or directory behind it is said as that (`file_error`).
_DANGLING = (
    '[ -L "$1" ] && [ ! -e "$1" ] && printf "orch: %s: Symlink to %s\\n" "$1" "$(readlink -- "$1")" >&2; '
)

# Read a file: $1 the path. Its size comes first, a line of its own on stdout (`-` when it cannot
# be said), so that the server takes room for all of it before any byte is read (`_Collected`).
_READ = (
    _SPECIAL
    + _DANGLING
    + 's=$(stat -L -c %s -- "$1" 2>/dev/null) || s=-; printf "%s\\n" "$s"; exec cat -- "$1"'
)


# Write stdin to a file: $1 the path, $2 the file's own name, $3 non-empty when $1 must be a
# directory, $4 a word for the temporary name. A directory takes the file as $2 inside it;
# otherwise the parent directories are made, only once the path is known to name a file. The
# bytes go to `.orch-write-$4` in the file's directory first, which is renamed into place (the
# mode of a file it replaces kept) only once all of them were written: a write that fails (a
# full disk) leaves no part of a file, and the file it would have replaced as it was. A symlink
# there is followed (the file it names is replaced). Where no file can be made beside it (a
# directory the sandbox user may not write, holding a file it may), or a file of another user
# is there, the file is written in place, as before. It prints the path written. (`true`, not
# `:`, makes the temporary file: a redirection that fails on a special builtin such as `:`
# ends dash itself.)
_WRITE = (
    'if [ -d "$1" ]; then [ -n "$2" ] || { echo "orch: $1: Is a directory" >&2; exit 1; }; '
    'set -- "${1%/}/$2" "$2" "$3" "$4"; '
    'elif [ -n "$3" ]; then echo "orch: $1: No such directory" >&2; exit 1; '
    'else mkdir -p -- "$(dirname -- "$1")" || exit 1; fi; '
    + _SPECIAL
    + '[ -d "$1" ] && { echo "orch: $1: Is a directory" >&2; exit 1; }; '
    'f=$1; [ -L "$f" ] && f=$(readlink -f -- "$1" 2>/dev/null); '
    't="${f%/*}/.orch-write-$4"; '
    'if [ -n "$f" ] && { [ ! -e "$f" ] || [ -O "$f" ]; } && { true > "$t"; } 2>/dev/null; then '
    'cat > "$t" || { rm -f -- "$t"; exit 1; }; '
    '[ -f "$f" ] && { chmod "$(stat -c %a -- "$f")" "$t" 2>/dev/null || :; }; '
    'mv -f -- "$t" "$f" || { rm -f -- "$t"; exit 1; }; '
    "else " + _DANGLING + 'n=; [ -e "$1" ] || [ -L "$1" ] || n=1; '
    'cat > "$1" || { [ -z "$n" ] || rm -f -- "$1"; exit 1; }; fi; '
    'printf %s "$1"'
)

# Remove what a killed write left under its temporary name: $1 the path it was given, $2 the
# word of its temporary name (beside the file, or in the directory $1 names).
_UNWRITE = (
    'for d in "${1%/}" "$(dirname -- "$1")"; do rm -f -- "${d%/}/.orch-write-$2"; done; '
    '[ -L "$1" ] && { f=$(readlink -f -- "$1") && rm -f -- "${f%/*}/.orch-write-$2"; }; exit 0'
)


def lexical(path: str) -> str:
    """The absolute `path` with its `.` and `..` components and repeated slashes resolved as
    words, without looking at the sandbox (`a/../../tmp/t` under /home/user is /tmp/t), as
    paths relative to /home/user are read; a trailing `/` that says it is a directory is
    kept. So the answer names the path written, and no directory is made for a `..` to leave."""
    where, marked = directory_form(path)
    found = posixpath.normpath(where)
    if found.startswith("//"):
        found = "/" + found.lstrip("/")
    return found + "/" if marked and found != "/" else found


def file_ended(verb: str, path: str, result: ExecResult, timeout: float | None) -> None:
    """A file call's command that did not end by itself: InvalidInput past its timeout,
    ClientGone once stopped (its caller went away)."""
    if result.timed_out:
        raise InvalidInput(
            f"{'Reading' if verb == 'read' else 'Writing'} {path} in the sandbox took more than "
            f"{timeout or 0:g} s; it was stopped.",
            "Something at the path may block (a pipe put there meanwhile): check what is there "
            "(`orch sandbox exec ID -- ls -l PATH`), then try again.",
        )
    if result.cancelled:
        raise ClientGone(f"The caller went away: the file {verb} of {path} was stopped.", "")


def directory_form(path: str) -> tuple[str, bool]:
    """`path` without the trailing `/` and `/.` that say it is a directory, and whether it had
    them ("/" stays "/")."""
    where, marked = path, False
    while where != "/" and where.endswith(("/", "/.")):
        where, marked = where.removesuffix(".").removesuffix("/") or "/", True
    return where, marked


class _Collected:
    """Bytes handed to a callback, kept up to `limit` (then `full`), each part once `take` gave
    room for it (else `refused`, and nothing more is kept).

    `sized`: the bytes begin with their size, a line of its own (the read script's). Room for
    all of them is then taken at once, before the first is kept, and a size past `limit` is
    `full` at once: reads side by side are each given their whole room or refused before they
    read anything. Before, each took room as its bytes came, and three 64 MiB reads in a
    workspace whose share is 128 MiB were all refused partway, none read (a tester). Bytes past
    the size said (a file that grew) take their room as they come."""

    def __init__(
        self, limit: int = 65536, take: Callable[[int], bool] | None = None, sized: bool = False
    ) -> None:
        self.limit = limit
        self.take = take
        self.parts: list[bytes] = []
        self.size = 0
        self.given = 0  # bytes of room `take` gave
        self.refused = False
        self._head: bytearray | None = bytearray() if sized else None

    def __call__(self, data: bytes) -> None:
        if self._head is not None:
            head = bytes(self._head + data)
            line, newline, rest = head.partition(b"\n")
            if not newline:
                if len(head) > 64:  # no size line: all of it is the bytes
                    self._head = None
                    self._keep(head)
                else:
                    self._head = bytearray(head)
                return
            self._head = None
            said = line.decode("ascii", "replace").strip()
            if said.isdigit():
                self._reserve(int(said))
            if rest:
                self._keep(rest)
            return
        self._keep(data)

    def _reserve(self, size: int) -> None:
        if size > self.limit:
            self.size = self.limit + 1  # full before any byte is read
        elif size and self.take is not None:
            if self.take(size):
                self.given = size
            else:
                self.refused = True

    def _keep(self, data: bytes) -> None:
        if self.refused or self.full():
            return
        self.size += len(data)
        if self.size > self.limit:
            return
        need = self.size - self.given
        if need > 0 and self.take is not None:
            if not self.take(need):
                self.refused = True
                return
            self.given += need
        self.parts.append(data)

    def full(self) -> bool:
        return self.size > self.limit

    def ended(self) -> bool:
        """Nothing more is kept: the read may stop."""
        return self.refused or self.full()

    def data(self) -> bytes:
        return b"".join(self.parts)

    def text(self) -> str:
        return self.data().decode("utf-8", "replace").strip()


def no_room_to_read(path: str) -> CapacityReached:
    """A read stopped since the server had no room for its bytes (the caller says more)."""
    return CapacityReached(
        f"The server has no room for more of {path}'s bytes at the moment.",
        "Read it again in a moment, once other file copies have ended.",
    )


def file_error(verb: str, path: str, said: str, code: int, disk: int | None = None) -> InvalidInput:
    """What `cat` or the shell said about `path` (`verb`: read or write), as a sentence with a
    fix for that verb. `disk`: the size of the sandbox's disk (its root's tmpfs), for a write
    that filled it."""
    reason = said.splitlines()[-1].rsplit(": ", 1)[-1] if said else f"exit code {code}"
    if code == NOT_FOUND and "not found" in said:
        return InvalidInput(
            f"The sandbox's image has no {'/bin/sh' if '/bin/sh' in said else 'cat'} to {verb} files with.",
            "Use an environment with a shell and coreutils (every orch base image has them).",
        )
    if verb == "write":
        known = _write_error(path, said, reason, disk)
        if known is not None:
            return known
    if "No such file" in reason:
        if (target := _symlink_target(said)) is not None:
            return NotFound(
                f"No file {path} in the sandbox: it is a symlink to {target}, which does not exist.",
                "Read the file it should name, or point the symlink at one (run `ln -sfn TARGET PATH`).",
            )
        return NotFound(
            f"No file {path} in the sandbox.", "Check the path; relative paths start at /home/user."
        )
    if reason == "No such directory":
        return NotFound(
            f"No directory {directory_form(path)[0]} in the sandbox.",
            "Create it first (e.g. run `mkdir -p DIR`), or give a path for the file itself, "
            "without the trailing /.",
        )
    return InvalidInput(f"Could not {verb} {path} in the sandbox: {reason}.", _file_fix(verb, reason))


def _write_error(path: str, said: str, reason: str, disk: int | None) -> InvalidInput | None:
    """The write's own failures that the system's words would misname, said as what happened."""
    if reason in ("No space left on device", "Disk quota exceeded"):
        size = f" ({format_size(disk)})" if disk else ""
        return InvalidInput(
            f"Could not write {path} in the sandbox: its disk is full ({reason}).",
            f"A sandbox's disk{size} is half its memory limit and holds every file written in it: "
            "free space in it (remove files you no longer need), or create a sandbox with more "
            "memory (orch sandbox create --memory 1Gi; `memory` in the API and the Python client).",
        )
    if reason == "File exists" and (part := re.search(r"directory .(/.*?).: File exists$", said, re.M)):
        return InvalidInput(
            f"Could not write {path} in the sandbox: {part[1]} is not a directory (a file, or a "
            "symlink to a directory that does not exist).",
            "Give a path whose directories exist or can be made, or remove what is there.",
        )
    if (
        reason in ("Directory nonexistent", "No such file or directory")
        and (target := _symlink_target(said)) is not None
    ):
        return InvalidInput(
            f"Could not write {path} in the sandbox: it is a symlink to {target}, whose directory "
            "does not exist.",
            "Make that directory first (e.g. run `mkdir -p DIR`), or write to another path.",
        )
    if reason in ("Directory nonexistent", "No such file or directory"):
        # The directory exists (it was made, or found): the file system there makes no files
        # (dash says ENOENT of a create as "Directory nonexistent"), as /proc and /sys.
        return InvalidInput(
            f"Could not write {path} in the sandbox: there is no such file, and none can be made "
            "there (the file system there holds no files of the sandbox's own).",
            "Write under /home/user or /tmp, which the sandbox user (uid 1000) can write.",
        )
    return None


def _symlink_target(said: str) -> str | None:
    """The target of the symlink that led to no file, as the file scripts said it (`_DANGLING`)."""
    found = re.search(r": Symlink to (.*)$", said, re.M)
    return found[1] if found else None


def _file_fix(verb: str, reason: str) -> str:
    if reason == "Too many levels of symbolic links":
        return "A symlink on the path leads back to itself: point it at a file (run `ln -sfn TARGET PATH`)."
    if reason == "Not a regular file":
        example = "-- head -c 1000 PATH" if verb == "read" else "-i -- sh -c 'cat > PATH'"
        return (
            "Files are copied to and from regular files only (not a pipe, a device or a socket); "
            f"for those, run a command with a timeout (e.g. `orch sandbox exec ID --timeout 10 {example}`)."
        )
    if reason == "Is a directory":
        if verb == "write":
            return "Give a path for the file itself, such as DIR/NAME."
        return (
            "Give the path of one file (to copy a directory, make an archive of it first, e.g. "
            "run `tar czf /tmp/dir.tgz DIR`)."
        )
    if verb == "write":
        return "The sandbox user (uid 1000) can write under /home/user and /tmp; check the path."
    if reason == "Permission denied":
        return (
            "The sandbox user (uid 1000) may not read it: read a file it can (its own, such as "
            "under /home/user and /tmp, or one readable by everyone)."
        )
    return "Check the path; files are read as the sandbox user (uid 1000)."


def _host_processes(among: Iterable[int] | None = None) -> dict[int, tuple[int, int]]:
    """Every live host process (zombies left out), or those of `among`: pid -> (parent pid,
    process group)."""
    if among is None:
        among = (int(e.name) for e in os.scandir("/proc") if e.name.isdigit())
    found = {}
    for pid in among:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            found[pid] = (int(fields[1]), int(fields[2]))
    return found


def _below(root: int, parents: Mapping[int, int]) -> set[int]:
    """`root` and every process below it, given each process's parent."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _namespace(pid: int) -> str:
    """The pid namespace of host process `pid` ("" when it is gone)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def kill_tree(
    pid: int, namespace: str, rounds: int = 20, members: Callable[[], set[int] | None] | None = None
) -> int:
    """Kill host process `pid` (a session leader), every process of its group wherever it was
    reparented, and every process below it, all of them in pid namespace `namespace` (the
    sandbox's: a number the kernel gave to another process meanwhile is never touched); all
    stopped first, so none forks past the kill. Return how many were killed.

    `members()` names the processes they can be among (the sandbox's cgroup's; None when it
    cannot say): only those are looked at, not every host process. Each look at every process
    is Python work under the GIL: hundreds of commands killed at once, each looking at a
    thousand processes a few times, held the server's event loop for seconds."""
    stopped: set[int] = set()
    if not namespace:
        return 0
    for _ in range(rounds):
        table = _host_processes(members() if members is not None else None)
        tree = _below(pid, {p: v[0] for p, v in table.items()}) & table.keys()
        group = {p for p, (_parent, pgid) in table.items() if pgid == pid}
        new = {p for p in (tree | group) - stopped if _namespace(p) == namespace}
        if not new:
            break
        for p in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGSTOP)
        stopped |= new
    for p in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    return len(stopped)
