"""The work of a cluster (docs/scale.md), on each side of it:

- `NodeWork`: what an orch node runs. Its platform's usual workers (builds, runs, deployments,
  the services' supervisor) claim from the shared store's queues on the node's own Podman, and a
  heartbeat thread says every second that the node is alive, what it runs and which images it
  holds; it also declares lost the other nodes Ray reports gone, and every RELEASE_EVERY
  seconds removes the environment images it holds that no record names any more (deleted or
  rebuilt on the server: services/images.py `release_held`). A node that finds itself
  declared lost stops: its runs went to other nodes or failed meanwhile.
- `Watch`: what a server of a cluster runs instead of workers. It runs nothing itself; it
  declares lost the nodes whose heartbeat stopped, so that no run stays stuck on a node that
  died while nothing else noticed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from typing import Protocol

from orch.services import images, nodes
from orch.services.nodes import Joining
from orch.services.platform import Platform
from orch.store.refusals import Outage

log = logging.getLogger(__name__)

NODE_POLL = 0.25  # a node's idle queue workers look at the store this often (no wake from a server)
RELEASE_EVERY = 30.0  # seconds between a node's looks for images no environment runs any more


class Serving(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class _Ticker:
    """A daemon thread that calls `tick` every `every` seconds until stopped."""

    def __init__(self, name: str, tick: Callable[[], bool], every: float) -> None:
        self._tick, self.every = tick, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.outage = Outage(name, log)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            going = True
            with self.outage.watching("%s failed", self._thread.name):  # a refusing store: one line
                going = self._tick()
            if not going:
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class Watch:
    """A cluster server's background work: declare silent nodes lost."""

    def __init__(self, platform: Platform, every: float = nodes.HEARTBEAT) -> None:
        self.platform = platform
        self._ticker = _Ticker("orch-node-watch", self._tick, every)

    def _tick(self) -> bool:
        nodes.settle_lost(self.platform)
        return True

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()


class NodeWork:
    """An orch node: `platform` works as node `me.id`; `alive` answers which Ray nodes are alive
    (None: not asked); `on_lost` is called if this node finds itself declared lost (a node in a
    Ray actor exits its process, and Ray starts it again)."""

    def __init__(
        self,
        platform: Platform,
        me: Joining,
        alive: Callable[[], Collection[str]] | None = None,
        on_lost: Callable[[], None] = lambda: os._exit(3),
        proxy: Serving | None = None,
    ) -> None:
        from orch.workers import Workers

        assert platform.node == me.id
        self.platform, self.me, self._alive, self._on_lost = platform, me, alive, on_lost
        self.proxy = proxy  # its services proxy, at me.proxy (server/node_proxy.py)
        # Queues are looked at often (no server wakes a node); services once a second, as on
        # one machine (each pass renews leases: a write).
        self.workers = Workers(platform, poll=NODE_POLL, supervise=1.0)
        self._ticker = _Ticker(f"orch-node-{me.id}", self._tick, nodes.HEARTBEAT)
        self._released_at = time.monotonic()

    def start(self) -> None:
        # The proxy answers before the node's row says where it is. Register before the
        # workers: recovery settles only this node's own rows, and its heartbeat must begin
        # before LOST_AFTER passes.
        if self.proxy is not None:
            self.proxy.start()
        nodes.register(self.platform, self.me)
        self.workers.start()
        self._ticker.start()

    def _tick(self) -> bool:
        held = set(self.platform.present_base_tags)
        if not nodes.heartbeat(self.platform, self.me.id, nodes.in_flight(self.platform), held):
            log.error("node %s was declared lost: stopping", self.me.id)
            self._on_lost()
            return False
        nodes.settle_lost(self.platform, self._alive() if self._alive else None)
        if time.monotonic() - self._released_at >= RELEASE_EVERY:
            self._released_at = time.monotonic()
            images.release_held(self.platform)
        return True

    def stop(self) -> int:
        """A clean stop (`orch node stop`, or a restart of the same node): its started runs fail
        first, `node stopped` (services/nodes.py `stopping`: the stop ends their agents, not
        they themselves); the supervisor gives its services' leases up, so other nodes take them
        over at once; its sandboxes are torn down with its workers; its services' containers go
        too (no one supervises them here any more, and its proxy, the only way to them, stops);
        then its row says `stopped` and what it had in flight is settled (`leave`). Return how
        many other nodes are up."""
        self._ticker.stop()
        nodes.stopping(self.platform, self.me.id)
        self.workers.stop()
        try:
            self.platform.engine.remove_containers(self.platform.service_labels())
        except Exception:  # its engine failing must not keep the node up: the sweep removes them
            log.exception("removing node %s's service containers failed", self.me.id)
        others = nodes.leave(self.platform, self.me.id)
        if self.proxy is not None:
            self.proxy.stop()
        return others
