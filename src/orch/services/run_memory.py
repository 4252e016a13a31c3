"""The memory runs' sandboxes may have at once (the `run_memory` setting): the sum of their
memory limits. A limit is what a sandbox may take before it is killed, so runs whose limits
together stay within the budget cannot, all at their limits, take the machine's memory from the
server and each other. A run that does not fit waits, in the order the runs came (a large run is
not overtaken forever by small ones), until enough has ended; a run larger than the whole
budget runs alone. `run_workers` still bounds how many run at once."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TICK = 0.25  # seconds between a waiting run's looks at its cancellation


class MemoryBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._line: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Bytes the runs inside hold."""
        with self._cond:
            return self._used

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
