"""Taking a service's containers down without holding the services' lock.

Draining a container (its requests in flight have up to routing.DRAIN_SECONDS to finish) and
stopping it (SIGTERM, then SIGKILL 10 s later) take seconds each. `platform.services_lock` is
one lock over every service of every workspace (each supervisor pass, each deploy's switch and
each stop, restart and delete take it), so none of that happens under it: what takes a
container down lets go of it in the store under the lock (its replica row points elsewhere, or
is gone) and *claims* it in the same hold, then drains and removes it after the lock is
released. A claimed container is **in hand**: the supervisor does not take it for an orphan
meanwhile (it would remove it at once, undrained). A server killed in between leaves it as an
orphan, which the next start's first pass removes (one killed during its stop too: the engine's
removal stops a container that Podman still shows `stopping`, engine/podman.py). The rest of
its output is stored under the lock (a service's output has one writer at a time) after its
removal, so what it prints while it shuts down (after SIGTERM) is stored too: Podman keeps a
container's log file (at the path orch gives it) past `podman stop` and `podman rm`."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from orch.errors import OrchError
from orch.kept import kept
from orch.models import ServiceState
from orch.services import deployed_logs, routing
from orch.services.platform import Platform
from orch.store.schema import ServiceReplicaRow, ServiceRow

log = logging.getLogger(__name__)

STOP_SECONDS = 10  # SIGTERM, then SIGKILL this many seconds later (`podman rm -t`)


class InHand:
    """The containers of one platform that are being taken down (or, for a restart, brought up)
    outside any replica row: the supervisor leaves them alone."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._services: dict[str, str] = {}  # container -> its service's id

    def add(self, service_id: str, containers: list[str]) -> None:
        with self._changed:
            self._services.update(dict.fromkeys(containers, service_id))

    def release(self, containers: list[str]) -> None:
        with self._changed:
            for c in containers:
                self._services.pop(c, None)
            self._changed.notify_all()

    def names(self) -> set[str]:
        with self._changed:
            return set(self._services)

    def wait(self, service_id: str, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until no container of the service is in hand
        (whoever takes it down: a use case, or the supervisor's pass); whether none is."""
        with self._changed:
            return self._changed.wait_for(lambda: service_id not in self._services.values(), timeout)


def in_hand(platform: Platform) -> InHand:
    """The platform's containers in hand, made and kept on it at first use."""
    return kept(platform, "_services_in_hand", InHand)


@dataclass
class Takedown:
    """Containers of one service, claimed (`claim`), to drain, remove and store the output of."""

    platform: Platform
    service_id: str
    containers: list[str]
    code: int  # the WebSocket close code their long-lived connections get (routing.RESTARTING...)
    reason: str
    stop_seconds: int = STOP_SECONDS

    def run(self) -> None:
        """Drain them (all at once), remove them (each in a thread of its own: a process that
        ignores SIGTERM costs its grace once, not once per container), store the rest of their
        output, what they printed stopping too (while the service is there); then they are out
        of hand. Only the output is stored under the services' lock. A container of another
        platform (the service's holder is another server, or a cluster's node) is only drained:
        its holder removes it as an orphan, as it does one whose removal failed (its output is
        stored then)."""
        platform = self.platform
        try:
            routing.of(platform).drain(self.containers, self.code, self.reason)
            own = [
                c for c in self.containers if platform.runs_work and c.startswith(platform.container_prefix)
            ]
            if not own:
                return
            if len(own) == 1:
                removed = [self._remove(own[0])]
            else:
                with ThreadPoolExecutor(len(own), thread_name_prefix="orch-takedown") as pool:
                    removed = list(pool.map(self._remove, own))
            with platform.services_lock, platform.store.session() as s:
                there = s.get(ServiceRow, self.service_id) is not None
                for c, gone in zip(own, removed, strict=True):
                    if not there:  # deleted: its output went with it
                        deployed_logs.forget(platform, c)
                    elif gone:
                        deployed_logs.archive(platform, s, self.service_id, c)
        finally:
            in_hand(platform).release(self.containers)

    def start(self) -> threading.Thread:
        """`run` in a thread of its own (the supervisor's pass goes on meanwhile)."""
        thread = threading.Thread(target=self.run, name="orch-takedown", daemon=True)
        thread.start()
        return thread

    def _remove(self, container: str) -> bool:
        """Remove the container; whether it is gone."""
        try:
            self.platform.engine.remove_container(container, timeout=self.stop_seconds)
        except OrchError as e:  # out of hand soon: the supervisor removes it as an orphan
            log.warning("removing container %s: %s", container, e)
            return False
        return True


def claim(
    platform: Platform,
    service_id: str,
    containers: list[str | None],
    code: int,
    reason: str,
    stop_seconds: int = STOP_SECONDS,
) -> Takedown:
    """Take `containers` in hand, under the services' lock and before the commit that lets go
    of them in the store; `run` the Takedown once the lock is released."""
    names = [c for c in containers if c]
    in_hand(platform).add(service_id, names)
    return Takedown(platform, service_id, names, code, reason, stop_seconds)


def renew_replica(r: ServiceReplicaRow) -> str | None:
    """Let go of a replica's container and keep the replica, its backoff forgotten: the
    supervisor's next pass starts it a fresh container of its version. Also during a rollout,
    which leaves the replicas' number to the deployment: the slot serves again at once, not
    when the rollout reaches it. Return the container let go of (for the caller to claim and
    take down here)."""
    old = r.container
    r.container, r.address, r.started_at, r.next_start_at = None, None, None, None
    r.quick_crashes = 0
    r.state = ServiceState.STARTING.value
    return old
