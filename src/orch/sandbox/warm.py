"""Warm sandboxes: started ahead of need for what ran recently, each handed one run, once.

A run's sandbox is keyed by everything its start depends on but the run itself (the runtime, the
image, the mounts, the limits, the network, the user: not its command, environment or input).
When a run starts, the pool is told its key is wanted; a background thread then starts one
sandbox for that key, so that the next run with the same key finds it started and only hands it
its command (see handoff.c). A sandbox is used by one run and removed after it, as a cold one
is; the pool never gives one out twice.

Bounded: at most `size` sandboxes wait at once, and one unwanted for `idle` seconds is removed.
Each wanted key has one waiting; the places left over (`size` less the keys wanted) give the most
recently wanted keys a second, so that runs of one agent back to back each find one waiting
while the next is started (one alone: the next run would wait for the start under way). A second
never costs another key its first: a key's first takes the place of a second before the least
recently wanted key's only one. Generic over what a sandbox is, so that its policy is tested
without a runtime (tests/unit/test_warm.py).
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
DEPTH = 2  # sandboxes at most waiting for one key (a second is started while the first runs)
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
        self._waiting: dict[str, list[_Waiting[T]]] = {}  # oldest first; no empty list
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
            dead = []
            while (waiting := self._pop_locked(key)) is not None and not self._alive(waiting.item):
                dead.append(waiting.item)  # it ended by itself (its runtime failed): not handed out
            if waiting is not None:
                self.taken += 1
        for item in dead:
            self._discard_quietly(item)
        return None if waiting is None else waiting.item

    def want(self, key: str, template: S) -> None:
        """A run with `key` started: have a sandbox waiting for the next one."""
        if self.size <= 0:
            return
        with self._cond:
            if self._closed:
                return
            self._wanted[key] = (template, self._clock())
            have = len(self._waiting.get(key, ())) + (self._starting == key) + self._todo.count(key)
            self._todo.extend([key] * (self._depth_locked(key) - have))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="warm-sandboxes", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def expire(self) -> None:
        """Remove the sandboxes of keys unwanted for `idle` seconds (the pool's thread does it
        every few seconds)."""
        with self._cond:
            self._expire_locked()

    def forget(self, unwanted: Callable[[str], bool]) -> None:
        """Want the keys `unwanted` says no more, and remove their waiting sandboxes before
        returning (their image was deleted: they would serve no run, and hold it). One being
        started for such a key is removed once started (`_loop`: its key is no longer wanted)."""
        with self._cond:
            keys = {k for k in [*self._wanted, *self._waiting] if unwanted(k)}
            items = []
            for key in keys:
                self._wanted.pop(key, None)
                self._todo = [k for k in self._todo if k != key]
                items += [w.item for w in self._waiting.pop(key, [])]
            self._cond.notify_all()
        for item in items:
            self._discard_quietly(item)

    def waiting(self) -> int:
        with self._cond:
            return self._count_locked() + self._busy

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
            items = [w.item for each in self._waiting.values() for w in each]
            self._waiting = {}
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
                have = len(self._waiting.get(key, ()))
                if have >= self._depth_locked(key):
                    self._cond.notify_all()  # for wait(): that may have been the last to do
                    continue  # no longer wanted that deep
                evicted, room = self._make_room_locked(first=not have)
                self._busy, self._starting = room, key if room else None
            for old in evicted:
                self._discard_quietly(old)
            if not room:  # a second, with no place that is not another key's first
                with self._cond:
                    self._cond.notify_all()
                continue
            item: T | None = None
            try:
                item = self._start(key, template)
            except Exception as e:  # noqa: BLE001 - any failure: the next run starts cold, and its own start says why
                log.warning("a warm sandbox could not be started: %s", e)
            with self._cond:
                self._busy, self._starting = False, None
                # Late: closed, the key no longer wanted (idle, or `forget`), or deep enough.
                late = item is not None and (
                    self._closed
                    or key not in self._wanted
                    or len(self._waiting.get(key, ())) >= self._depth_locked(key)
                )
                if item is not None and not late:
                    self._waiting.setdefault(key, []).append(_Waiting(item, self._clock()))
                self._cond.notify_all()
            if late and item is not None:
                self._discard_quietly(item)

    def _depth_locked(self, key: str) -> int:
        """How many should wait for `key`: two for the most recently wanted keys while there
        are places beyond one for each wanted key, else one."""
        spare = self.size - len(self._wanted)
        if spare <= 0 or key not in self._wanted:
            return min(1, self.size)
        recent = sorted(self._wanted, key=lambda k: self._wanted[k][1], reverse=True)[:spare]
        return DEPTH if key in recent else 1

    def _count_locked(self) -> int:
        return sum(len(each) for each in self._waiting.values())

    def _make_room_locked(self, first: bool) -> tuple[list[T], bool]:
        """Free a place for one more, and say whether there is one: a sandbox beyond its key's
        depth goes first (a second whose key is no longer among the most recent); for a key's
        first, then a second, then the least recently wanted key's only one. A second never
        takes another key's first place."""
        out: list[T] = []
        while self._count_locked() >= self.size:
            over = [k for k, each in self._waiting.items() if len(each) > self._depth_locked(k)]
            doubled = [k for k, each in self._waiting.items() if len(each) > 1]
            choices = over or (doubled or list(self._waiting) if first else [])
            if not choices:
                return out, False
            oldest = min(choices, key=lambda k: self._wanted.get(k, (None, 0.0))[1])
            popped = self._pop_locked(oldest, newest=True)
            assert popped is not None
            out.append(popped.item)
        return out, True

    def _pop_locked(self, key: str, newest: bool = False) -> _Waiting[T] | None:
        """One of `key`'s waiting sandboxes, no longer the pool's: the oldest, or the newest."""
        each = self._waiting.get(key)
        if not each:
            return None
        popped = each.pop(-1 if newest else 0)
        if not each:
            del self._waiting[key]
        return popped

    def _expire_locked(self) -> None:
        now = self._clock()
        for key in [k for k, (_t, when) in self._wanted.items() if now - when > self.idle]:
            del self._wanted[key]
            self._todo = [k for k in self._todo if k != key]  # a first and a second, maybe
            for waiting in self._waiting.pop(key, []):
                # Removed outside the lock: a thread of its own, the pool's goes on.
                threading.Thread(target=self._discard_quietly, args=(waiting.item,), daemon=True).start()

    def _discard_quietly(self, item: T) -> None:
        try:
            self._discard(item)
        except Exception as e:  # noqa: BLE001 - the pool goes on; what stays behind is found by the sweep
            log.warning("a warm sandbox was not removed fully: %s", e)
