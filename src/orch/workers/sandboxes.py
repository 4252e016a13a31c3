"""The sandbox reaper: a thread that removes the sandboxes on demand this server holds once they
are idle past their timeout, past their lifetime, or dead (services/sandboxes.py says which),
and that settles and removes them at the server's start and stop."""

from __future__ import annotations

import logging
import threading

from orch.services import nodes, sandboxes
from orch.services.platform import Platform
from orch.store.refusals import Outage

log = logging.getLogger(__name__)


class Reaper:
    """One pass every `poll` seconds (the idle timeouts' resolution)."""

    def __init__(self, platform: Platform, poll: float = 1.0) -> None:
        self.platform = platform
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage = Outage("removing idle sandboxes", log)

    def start(self) -> None:
        """Settle the sandboxes of before a restart (the run queue's recovery, which runs first,
        swept what they left on the host), then start reaping."""
        sandboxes.recover(self.platform)
        self._thread = threading.Thread(target=self._reap, name="orch-sandbox-reaper", daemon=True)
        self._thread.start()

    def _reap(self) -> None:
        while not self._stop.wait(self.poll):
            with self.outage.watching("removing idle sandboxes failed"):
                sandboxes.reap(self.platform)  # the store refusing is one line, not a traceback

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and remove every sandbox this server holds: none outlives it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # On a cluster's node, the node's stop (`orch node stop`): its sandboxes say so.
        reason = nodes.NODE_STOPPED if self.platform.node is not None else "the server stopped"
        if removed := sandboxes.close_all(self.platform, reason):
            noun = "sandbox" if removed == 1 else "sandboxes"
            log.info("removed %d %s on demand that this server held", removed, noun)
