"""Worker threads that drain a durable queue in the store until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from orch.store.refusals import Outage

log = logging.getLogger(__name__)


class QueueWorkers:
    """`count` threads, each claiming one queued item at a time and working it to its end. An
    exception out of `work` is logged and the worker goes on (a thread lost to one would be one
    worker fewer until a restart).

    `recover` runs once before they start (settling what a stopped server left in flight);
    `wake` is set by whoever queues work, so an idle worker starts at once instead of at its
    next poll. One idle worker at a time waits on it: a queued item wakes one worker, which
    wakes the next when it claimed something (there may be more), rather than every idle worker
    racing for the same item (each race a transaction on the store, on the run's own path)."""

    def __init__(
        self,
        name: str,
        *,
        claim: Callable[[], str | None],
        work: Callable[[str], None],
        recover: Callable[[], object],
        wake: threading.Event,
        count: int = 1,
        poll: float = 1.0,
    ) -> None:
        self.name = name
        self._claim, self._work, self._recover, self._wake = claim, work, recover, wake
        self.count = count
        self.poll = poll
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._waiter = threading.Lock()  # held by the one idle worker that waits on `wake`
        self.outage = Outage(f"claiming from the {name} queue", log)
        self.working = Outage(f"working the {name} queue", log, "each item is tried on its own")

    def start(self) -> None:
        self._recover()
        for i in range(self.count):
            t = threading.Thread(target=self._loop, name=f"orch-{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            item = None
            with self.outage.watching("claiming from the %s queue failed", self.name):
                item = self._claim()  # the store refusing is one line, not a traceback a pass
            if item is None:
                self._idle()
                continue
            self._wake.set()  # the next idle worker looks for more
            # `work` records its own failures; one it could not (the store refusing that too)
            # must not end the worker.
            with self.working.watching("working %s from the %s queue failed", item, self.name):
                self._work(item)

    def _idle(self) -> None:
        """Wait for work, or `poll` seconds: one worker at a time (the others wait their turn)."""
        with self._waiter:
            if self.stopping.is_set():
                return
            self._wake.wait(self.poll)
            if not self.stopping.is_set():
                self._wake.clear()

    def stop(self, timeout: float = 5.0) -> None:
        """`halt`, then `join`: at most `timeout` seconds for all the workers together."""
        self.halt()
        self.join(time.monotonic() + timeout)

    def halt(self) -> None:
        """No worker claims anything more; the idle ones end at once."""
        self.stopping.set()
        self._wake.set()

    def join(self, deadline: float) -> list[str]:
        """Wait for the workers to end, until `deadline` (time.monotonic()) at the latest, one
        wait for them all (not one each: a worker still busy costs it once); return the names
        of those still busy then."""
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]
