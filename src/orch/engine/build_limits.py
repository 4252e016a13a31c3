"""The memory and process limits of a build's RUN steps, and whether a failed build reached one.

A RUN step runs the workspace's own commands, as root: unbounded, one could take the machine's
memory or fork until no process of any workspace (or the server) can start. `podman build`
gives each step a memory limit (`--memory`, with `--memory-swap` equal: no swap beyond it), but
no process limit (Podman 4.3 has no `--pids-limit` for builds, and `--ulimit nproc` binds
neither root nor one build: it counts a user's processes machine-wide). So a build's steps run
under a parent cgroup of the build's own, `--cgroup-parent=/orch_build-OWNER-NONCE/steps`
(cgroupfs: each step's cgroup is `steps` below it, made for the step and removed after it): the
parent's `pids.max` bounds the processes and threads the steps have at once, and its counters,
which outlive each step's cgroup, say afterwards which limit a failed build reached (read as a
run's parent cgroup's are, engine/podman_run.py):

    Limits.of(memory, pids, owner)  the build's limits, its parent cgroup named after its
                                    owner argument (engine/podman.py's OWNER_ARG value)
    .args()                         podman build's arguments for them
    .start()                        make the parent cgroup with its pids.max
    .reached(code, tail)            the BuildFailed that names the limit a failed build reached, or None
    .end()                          kill whatever still runs in it (a stopped build's step), remove it
    leftovers(owner)                the parents of the owner's builds a killed server left

A stopped build's step is also ended by its container in the OCI runtime (build_steps.py),
whose cgroup lies under this parent.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from orch.engine import podman_run
from orch.engine.podman_run import CGROUP_ROOT, cgroup_parent
from orch.errors import BuildFailed, EngineError
from orch.sizes import format_size

_ROUNDS = 50  # passes over the parent cgroup (a step that forks while it is killed needs more than one)
_SIGKILLED = 128 + signal.SIGKILL  # podman build's exit code when a step's process was killed so
# A SIGKILL said in a step's output when its own exit code is not 137: the shell's or make's
# `Killed` for a command killed under it (the step may go on and end otherwise), gcc's `Killed
# signal terminated program`, or Buildah's `container exited on killed` (it then exits 1) when
# what it ran for the step was killed (as when a tmpfs mount filled to the limit leaves no
# memory for any process of the step: its files stay charged after the writer is killed).
_PODMAN_ERROR = "Error: building at STEP "
_KILLED = re.compile(r"\bKilled\b|\bSIGKILL\b|^container exited on killed$")


@dataclass(frozen=True)
class Limits:
    name: str  # the parent cgroup's, as podman_run.cgroup_parent takes it
    memory: int  # bytes; 0: none
    pids: int  # 0: none

    @classmethod
    def of(cls, memory: int, pids: int, owner: str) -> Limits:
        """The limits of the build whose owner argument is `owner` (`OWNER/NONCE`, or '')."""
        tail = owner.replace("/", "-") if owner else secrets.token_hex(8)
        return cls(f"build-{tail}", memory, pids)

    def args(self) -> list[str]:
        """podman build's arguments for the limits."""
        if not self.memory and not self.pids:
            return []
        args = [f"--cgroup-parent={cgroup_parent(self.name)}/steps"]
        if self.memory:
            args += [f"--memory={self.memory}b", f"--memory-swap={self.memory}b"]
        return args

    def start(self) -> None:
        """Make the parent cgroup with its pids.max (again after an `end`). A process limit that
        can't be set fails the build before it starts: a build without it is what the limit is
        there to prevent."""
        if not self.pids:
            return
        folder = _pids_folder(self.name)
        try:
            folder.mkdir(exist_ok=True)
            (folder / "pids.max").write_text(str(self.pids))
        except OSError as e:
            self.end()
            raise EngineError(
                f"Cannot limit the processes of the build's steps ({folder}: {e.strerror}).",
                "Run scripts/setup (Podman with the cgroupfs cgroup manager, run as root), then build again.",
            ) from None

    def reached(self, code: int, tail: list[str]) -> BuildFailed | None:
        """Why a build that failed with `code` (podman build's exit code: the step's) failed, when
        the kernel's counters say it reached a limit: a step whose memory use had reached the
        limit and that a SIGKILL ended or marked (137, or a kill in its output: `_killed`), or a
        step that failed once the steps' processes had filled the process limit (a fork
        refused: `Cannot fork`, `Resource temporarily unavailable`). On cgroup v1 the parent's
        counters are its peaks (it counts refused forks and OOM kills only in the step's own
        cgroup, gone by then), so "reached", not "refused". The memory peak alone says little:
        the page cache of a step that writes more files than the limit fills it too, and
        is given back, not killed for."""
        if code == 0:
            return None
        killed = code == _SIGKILLED or _killed(tail)
        if self.memory and killed and _memory_peak(self.name) >= self.memory * 0.99:
            return BuildFailed(
                f"A step of the build was killed at the {format_size(self.memory)} memory limit "
                "that ORCH_BUILD_MEMORY gives build steps",
                "Make the step use less memory (fewer jobs at once, e.g. `make -j2`; the files "
                "in a tmpfs mount count too), or ask the server's operator to raise "
                "ORCH_BUILD_MEMORY.",
                tail=tail,
            )
        if self.pids and podman_run._pids_reached_limit(self.name, self.pids):
            return BuildFailed(
                f"A step of the build failed once the build's steps had reached the "
                f"{self.pids:,} processes and threads that ORCH_BUILD_PIDS allows them at once",
                "Make the step start fewer processes or threads at once (fewer jobs, e.g. "
                "`make -j2`), or ask the server's operator to raise ORCH_BUILD_PIDS.",
                tail=tail,
            )
        return None

    def end(self) -> int:
        """Kill every process in the parent cgroup, then remove it from every hierarchy. Return
        how many processes were killed."""
        return end(self.name) if self.memory or self.pids else 0


def end(name: str) -> int:
    """Kill every process in the build parent cgroup `name` (any hierarchy), then remove it."""
    killed: set[int] = set()
    for _ in range(_ROUNDS):
        found = _processes_under(name)
        if not found:
            break
        for pid in found - killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.02)
    podman_run.remove_cgroup_parent(name)
    return len(killed)


def leftovers(owner: str) -> list[str]:
    """The parent cgroups of `owner`'s builds that still exist (a killed server's)."""
    return sorted(podman_run.cgroup_parents(f"build-{owner}-"))


def _pids_folder(name: str) -> Path:
    """The parent cgroup's directory in the pids controller's hierarchy (v1), or the unified one."""
    parent = cgroup_parent(name).lstrip("/")
    return CGROUP_ROOT / "pids" / parent if (CGROUP_ROOT / "pids").is_dir() else CGROUP_ROOT / parent


def _killed(tail: list[str]) -> bool:
    """Whether the failed step's output (the tail's lines after its last STEP line) says a
    process of it was killed with SIGKILL (`_KILLED`). Podman's lines that quote the step's
    instruction (`STEP 2/2: RUN ...`, `Error: building at STEP "RUN ..."`) are not its output."""
    steps = [n for n, line in enumerate(tail) if line.startswith("STEP ")]
    output = tail[steps[-1] + 1 if steps else 0 :]
    return any(_KILLED.search(line) for line in output if not line.startswith(_PODMAN_ERROR))


def _memory_peak(name: str) -> int:
    """The most memory the parent cgroup's steps used at once (v1: max_usage_in_bytes; v2:
    memory.peak), 0 if unknown."""
    parent = cgroup_parent(name).lstrip("/")
    for path in (
        CGROUP_ROOT / "memory" / parent / "memory.max_usage_in_bytes",
        CGROUP_ROOT / parent / "memory.peak",
    ):
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
    return 0


def _processes_under(name: str) -> set[int]:
    """The processes in the parent cgroup `name` or below it, in any hierarchy."""
    parent = cgroup_parent(name).lstrip("/")
    found: set[int] = set()
    for top in [*CGROUP_ROOT.glob(f"*/{parent}"), CGROUP_ROOT / parent]:
        for procs in top.glob("**/cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                found.update(int(line) for line in procs.read_text().split())
    return found
