"""Warm sandboxes: started ahead of need for what ran recently, each handed one run, once.

A run's sandbox is keyed by everything its start depends on but the run itself (the runtime, the
image, the mounts, the limits, the network, the user: not its command, environment or input).
When a run starts, the pool is told its key is wanted; a background thread then starts one
sandbox for that key, so that the next run with the same key finds it started and only hands it
its command (see handoff.c). A sandbox is used by one run and removed after it, as a cold one
is; the pool never gives one out twice.

Bounded: at most `size` sandboxes wait at once (the least recently wanted key's goes first), one
per key, and one unwanted for `idle` seconds is removed. Generic over what a sandbox is, so
that its policy is tested without a runtime (tests/unit/test_warm.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
S = TypeVar("S")
log = logging.getLogger(__name__)
IDLE = 120.0  # seconds a key may go unwanted before its waiting sandbox is removed
_TICK = 5.0  # how often idle sandboxes are looked for


@dataclass
class _Waiting(Generic[T]):
    item: T
    made: float


class Pool(Generic[T, S]):
    """`start(key, template)` makes a sandbox (blocking, in the pool's thread); `discard(item)`
    removes one never used; `alive(item)` says whether one can still be handed a run."""

    def __init__(
        self,
        start: Callable[[str, S], T],
        discard: Callable[[T], None],
        alive: Callable[[T], bool],
        size: int,
        idle: float = IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._start, self._discard, self._alive = start, discard, alive
        self.size, self.idle, self._clock = size, idle, clock
        self._waiting: dict[str, _Waiting[T]] = {}
        self._wanted: dict[str, tuple[S, float]] = {}  # key -> (template, last wanted)
        self._todo: list[str] = []  # keys to start a sandbox for, oldest first
        self._busy = False  # the thread is starting one
        self._starting: str | None = None  # for this key
        self._promised = False  # a take() waits for the one being started
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.taken = 0  # runs that found their sandbox waiting (for metrics and tests)

    def take(self, key: str, wait: float = 1.0) -> T | None:
        """The sandbox waiting for `key`, now the caller's; None when there is none. One being
        started for `key` right now is waited for (up to `wait` seconds): it is further along
        than a cold start would be. By one caller only: it serves one run, and the others, had
        they waited too, would start cold only after it (a burst of runs of one key waited in a
        row, with the machine idle)."""
        deadline = self._clock() + wait
        with self._cond:
            if self._starting == key and key not in self._waiting and not self._promised:
                self._promised = True
                try:
                    while (
                        self._starting == key
                        and key not in self._waiting
                        and (left := deadline - self._clock()) > 0
                    ):
                        self._cond.wait(left)
                finally:
                    self._promised = False
            waiting = self._waiting.pop(key, None)
            if waiting is not None and self._alive(waiting.item):
                self.taken += 1
                return waiting.item
        if waiting is not None:  # it ended by itself (its runtime failed): not handed out
            self._discard_quietly(waiting.item)
        return None

    def want(self, key: str, template: S) -> None:
        """A run with `key` started: have a sandbox waiting for the next one."""
        if self.size <= 0:
            return
        with self._cond:
            if self._closed:
                return
            self._wanted[key] = (template, self._clock())
            if key not in self._waiting and key not in self._todo:
                self._todo.append(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="warm-sandboxes", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def expire(self) -> None:
        """Remove the sandboxes of keys unwanted for `idle` seconds (the pool's thread does it
        every few seconds)."""
        with self._cond:
            self._expire_locked()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting) + self._busy

    def wait(self, timeout: float = 60) -> None:
        """Until nothing is being started (tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._todo or self._busy) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def close(self) -> None:
        """Stop starting sandboxes and remove the waiting ones."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(60)
        with self._cond:
            items, self._waiting = [w.item for w in self._waiting.values()], {}
        for item in items:
            self._discard_quietly(item)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._todo and not self._closed:
                    self._cond.wait(_TICK)
                    self._expire_locked()
                if self._closed:
                    self._cond.notify_all()
                    return
                key = self._todo.pop(0)
                template, _ = self._wanted[key]
                evicted = self._make_room_locked()
                self._busy, self._starting = True, key
            for old in evicted:
                self._discard_quietly(old)
            item: T | None = None
            try:
                item = self._start(key, template)
            except Exception as e:  # noqa: BLE001 - any failure: the next run starts cold, and its own start says why
                log.warning("a warm sandbox could not be started: %s", e)
            with self._cond:
                self._busy, self._starting = False, None
                late = item is not None and (self._closed or key in self._waiting)
                if item is not None and not late:
                    self._waiting[key] = _Waiting(item, self._clock())
                self._cond.notify_all()
            if late and item is not None:
                self._discard_quietly(item)

    def _make_room_locked(self) -> list[T]:
        """Free a place for one more: the least recently wanted key's sandbox goes."""
        out = []
        while self._waiting and len(self._waiting) >= self.size:
            oldest = min(self._waiting, key=lambda k: self._wanted.get(k, (None, 0.0))[1])
            out.append(self._waiting.pop(oldest).item)
        return out

    def _expire_locked(self) -> None:
        now = self._clock()
        for key in [k for k, (_t, when) in self._wanted.items() if now - when > self.idle]:
            del self._wanted[key]
            if key in self._todo:
                self._todo.remove(key)
            if (waiting := self._waiting.pop(key, None)) is not None:
                # Removed outside the lock: a thread of its own, the pool's goes on.
                threading.Thread(target=self._discard_quietly, args=(waiting.item,), daemon=True).start()

    def _discard_quietly(self, item: T) -> None:
        try:
            self._discard(item)
        except Exception as e:  # noqa: BLE001 - the pool goes on; what stays behind is found by the sweep
            log.warning("a warm sandbox was not removed fully: %s", e)
