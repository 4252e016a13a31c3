"""The supervisor: a thread that keeps a platform's services running (services/reconcile.py
says how; of a store shared by several servers, those whose lease it holds: services/leases.py),
and sweeps what the platform's gone containers left in the engine."""

from __future__ import annotations

import logging
import threading
import time

from orch.services import deployed_logs, leases
from orch.services.platform import Platform
from orch.services.reconcile import reconcile
from orch.store.refusals import Outage

log = logging.getLogger(__name__)

SWEEP_EVERY = 60.0  # seconds between sweeps of what gone containers left in the engine


def sweep(platform: Platform) -> int:
    """Remove what this platform's gone containers (runs' and services') left in the engine: a
    server killed while it removed one leaves its cgroups behind."""
    swept = platform.engine.remove_leftovers(platform.container_prefix)
    if swept:
        log.info("removed the leftovers of %d gone containers", swept)
    return swept


class Supervisor:
    """The thread that keeps a platform's services as their rows say (one pass a second, or at
    once when woken through `platform.wake_supervisor`)."""

    def __init__(self, platform: Platform, poll: float = 1.0) -> None:
        self.platform = platform
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage = Outage("supervising services", log)

    def start(self) -> None:
        sweep(self.platform)
        self._thread = threading.Thread(target=self._supervise, name="orch-supervisor", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        event = self.platform.wake_supervisor
        next_sweep = time.monotonic() + SWEEP_EVERY
        while not self._stop.is_set():
            due = None
            with self.outage.watching("supervising services failed"):  # a refusing store: one line
                due = reconcile(self.platform, settle=False)  # what it takes down goes meanwhile
                if time.monotonic() >= next_sweep:
                    sweep(self.platform)
                    next_sweep = time.monotonic() + SWEEP_EVERY
            # A restart whose backoff ends before the next poll happens on time, not at the poll.
            event.wait(self.poll if due is None else max(0.01, min(self.poll, due)))
            event.clear()

    def stop(self, timeout: float = 5.0, release: bool = True) -> None:
        """Stop the thread; the services' containers keep running (they outlive the server). Its
        services' leases are given up, so another server of the store takes them over at once
        (release=False: as a killed server leaves them, to expire)."""
        self._stop.set()
        self.platform.wake_supervisor.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():  # else its pass still reads them
            deployed_logs.keep_only(self.platform, set())  # the containers' log files it held open
        if release:
            try:
                with self.platform.services_lock:
                    released = leases.release(self.platform)
            except Exception:  # a store that is gone: the leases expire instead
                log.exception("releasing the services' leases failed")
            else:
                if released:
                    log.info("released the leases of %d services", released)
