"""What sandboxes may hold at once: their memory (the `run_memory` setting), the sum of the
memory limits of runs' sandboxes and of sandboxes on demand, and their processes (`run_pids`),
the sum of their process limits. A limit is what a sandbox may take before it is killed (memory)
or refused (a fork), so sandboxes whose limits together stay within the budgets cannot, all at
their limits, take the machine's memory from the server and each other, nor each other's
processes: every sandbox runs as the host's uid 1000, whose processes the kernel counts
together against one RLIMIT_NPROC (the sandboxes', `sandbox/oci.py`), which the processes
budget stays below. A run that does not fit waits, in the order they came (a large one is not
overtaken forever by small ones), until enough has ended; a run larger than the whole budget
runs alone (no run or sandbox beside it). `run_workers` still bounds how many run at once.

A run holds its shares while inside `Budgets.reserved`; a sandbox on demand holds them from its
start until it is removed (`Budgets.hold`, `Budgets.release`), since it lives across requests
(services/sandboxes.py decides how long a create waits in the line). Both take memory first,
then processes: every holder of processes holds its memory, so no two wait on each other."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from orch.sizes import format_size

TICK = 0.25  # seconds between a waiting run's looks at its cancellation


def above_machine(total: int, machine: int) -> str | None:
    """What to say at start when the budget is more than the machine's memory: sandboxes at
    their limits could then take the memory the server and the machine need (a limit is a
    most, so an operator may mean it; it is said, not refused)."""
    if total <= machine:
        return None
    return (
        f"ORCH_RUN_MEMORY is {format_size(total)}, more than this machine's {format_size(machine)} "
        "of memory: sandboxes at their memory limits could take the memory the server and the "
        "machine need. Set it below that (the default is half the machine's memory)."
    )


def above_nproc(total: int, nproc: int) -> str | None:
    """What to say at start when the processes budget reaches the sandboxes' RLIMIT_NPROC: the
    kernel counts all their processes together against it, so one sandbox's could then make
    another's fork fail below its own limit."""
    if total < nproc:
        return None
    return (
        f"ORCH_RUN_PIDS is {total:,}, not below the {nproc:,} processes that sandboxes' user may have "
        "on this machine (their RLIMIT_NPROC, containers.conf's default_ulimits): one sandbox's "
        "processes could then keep another's from starting. Set it below that (the default is half)."
    )


class Budget:
    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._line: deque[object] = deque()
        self._held: dict[str, int] = {}  # the shares held across calls (`hold`), by key
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Bytes the runs inside hold."""
        with self._cond:
            return self._used

    @property
    def held_by_sandboxes(self) -> int:
        """Bytes the sandboxes on demand hold (part of `used`)."""
        with self._cond:
            return sum(self._held.values())

    @property
    def waiting(self) -> int:
        """Runs waiting for their turn."""
        with self._cond:
            return len(self._line)

    @contextmanager
    def reserved(
        self, need: int, should_stop: Callable[[], bool], on_wait: Callable[[int], None]
    ) -> Iterator[bool]:
        """Hold `need` bytes of the budget while inside, after waiting (if it must) until they
        fit; `on_wait(bytes in use)` is called once when it waits. Yields False, holding nothing,
        when `should_stop()` (asked every TICK while waiting) says to give up."""
        held = self._take(need, should_stop, on_wait)
        try:
            yield held
        finally:
            if held:
                with self._cond:
                    self._used -= need
                    self._cond.notify_all()

    def hold(
        self, key: str, need: int, should_stop: Callable[[], bool], on_wait: Callable[[int], None]
    ) -> bool:
        """Take `need` bytes for `key` until `release(key)`, after waiting in the line (as a run
        does) until they fit; False, holding nothing, when `should_stop()` says to give up."""
        if not self._take(need, should_stop, on_wait):
            return False
        with self._cond:
            self._held[key] = self._held.get(key, 0) + need
        return True

    def release(self, key: str) -> None:
        """Give back what `key` holds; nothing if it holds nothing (already released)."""
        with self._cond:
            self._used -= self._held.pop(key, 0)
            self._cond.notify_all()

    def _take(self, need: int, should_stop: Callable[[], bool], on_wait: Callable[[int], None]) -> bool:
        me = object()
        with self._cond:
            if not self._line and self._fits_locked(need):
                self._used += need
                return True
            self._line.append(me)
            in_use = self._used
        try:
            on_wait(in_use)
            while True:
                with self._cond:
                    if self._line[0] is me and self._fits_locked(need):
                        self._used += need
                        return True
                    self._cond.wait(TICK)
                if should_stop():
                    return False
        finally:
            with self._cond:
                self._line.remove(me)
                self._cond.notify_all()  # the next in line may fit now

    def _fits_locked(self, need: int) -> bool:
        return self._used == 0 or self._used + need <= self.total


class Budgets:
    """Both budgets, whose shares a sandbox takes in one order: its memory first, then its
    processes. A holder waiting for processes then always holds its memory, and one waiting for
    memory holds no processes, so no two wait on each other. `on_wait(budget, in use)` is told
    once per budget it waits in, by name ("memory", "processes")."""

    def __init__(self, memory: Budget, pids: Budget) -> None:
        self.memory = memory
        self.pids = pids

    @contextmanager
    def reserved(
        self, memory: int, pids: int, should_stop: Callable[[], bool], on_wait: Callable[[str, int], None]
    ) -> Iterator[str | None]:
        """Hold `memory` bytes and `pids` processes while inside. Yields None when held; when
        `should_stop()` said to give up, the budget it waited for ("memory", "processes"),
        holding nothing."""
        with self.memory.reserved(memory, should_stop, partial(on_wait, "memory")) as admitted:
            if not admitted:
                yield "memory"
                return
            with self.pids.reserved(pids, should_stop, partial(on_wait, "processes")) as admitted:
                yield None if admitted else "processes"

    def hold(
        self,
        key: str,
        memory: int,
        pids: int,
        should_stop: Callable[[], bool],
        on_wait: Callable[[str, int], None],
    ) -> str | None:
        """Take both for `key` until `release(key)`: None when taken; the budget it gave up
        waiting for ("memory", "processes") when `should_stop()` said so, holding nothing."""
        if not self.memory.hold(key, memory, should_stop, partial(on_wait, "memory")):
            return "memory"
        if not self.pids.hold(key, pids, should_stop, partial(on_wait, "processes")):
            self.memory.release(key)
            return "processes"
        return None

    def release(self, key: str) -> None:
        """Give back what `key` holds of both; nothing if it holds nothing (already released)."""
        self.memory.release(key)
        self.pids.release(key)
