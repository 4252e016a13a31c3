"""Restarting a service's replicas one at a time, as a deploy replaces them (docs/services.md,
"Restarting").

On the platform that supervises the service (it runs work and holds, or takes, the service's
lease), each replica that serves gets a new container of its version next to the one that
serves; once the new one answers on its port, the replica switches to it and the old one is
drained and stopped (services/takedown.py). So a restart is no outage, of one replica either,
and a new container that does not answer stops the restart with the old ones serving. A replica
that does not serve (exited, waiting out its backoff, starting) is renewed at once: its container
goes, its backoff is forgotten, and the supervisor starts it afresh.

A platform that does not supervise the service (a cluster's server, another server of the
store) renews the replicas in the store, one at a time, and waits for one that served to serve
again (its holder's supervisor starts it) before it renews the next: with several replicas, the
others serve meanwhile.

No step holds the services' lock (every workspace's) for longer than a change of rows (and a
`podman run`)."""

from __future__ import annotations

import logging
import time

from orch.errors import ServiceUnavailable
from orch.models import ServiceState
from orch.sandbox.service_spec import PORT
from orch.services import deployed_logs, leases, routing, takedown
from orch.services.platform import Platform
from orch.services.reconcile import replicas, start_container, version_of
from orch.services.takedown import renew_replica
from orch.store.schema import ServiceReplicaRow, ServiceRow, utcnow

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between two looks at a new container (or a renewed replica)
REASON = "the service is restarting"


def restart(platform: Platform, service_id: str) -> None:
    """Fresh containers for the service's replicas, one replica at a time. ServiceUnavailable
    when one does not serve again: the replicas after it are left as they were."""
    with platform.store.session() as s:
        slots = [r.slot for r in replicas(s, service_id)]
    lease = leases.Kept(platform, service_id)
    for i, slot in enumerate(slots):
        _restart(platform, lease, service_id, slot, more=i < len(slots) - 1)


def _restart(platform: Platform, lease: leases.Kept, service_id: str, slot: int, more: bool) -> None:
    mine = platform.runs_work and lease.acquire(platform.stopping, wait=0)
    new: str | None = None
    with platform.services_lock:
        with platform.store.session() as s:
            svc = s.get(ServiceRow, service_id)
            row = s.get(ServiceReplicaRow, (service_id, slot))
            if svc is None or row is None or svc.desired == "stopped":
                return  # deleted, stopped, or fewer replicas since
            name, old = svc.name, row.container
            served = row.state == ServiceState.RUNNING.value and old is not None
            version = version_of(s, service_id, row.version) or version_of(s, service_id, svc.version)
            if mine and served and version is not None and str(old).startswith(platform.container_prefix):
                new = start_container(platform, svc, version)
                takedown.in_hand(platform).add(service_id, [new])  # not an orphan while it comes up
                number = version.version
            else:
                renew_replica(row)
        if new is None:
            gone = takedown.claim(platform, service_id, [old], routing.RESTARTING, REASON)
    if new is not None:
        _switch(platform, lease, service_id, slot, name, old, new, number)
        return
    routing.of(platform).changed()
    gone.run()
    if served and more and not _serves_again(platform, service_id, slot):
        seconds = _patience(platform)
        raise ServiceUnavailable(
            f"{name}'s replica {slot} did not serve again within {seconds:.0f} s of its restart, so the "
            "replicas after it were not restarted.",
            "See the service's status and its logs.",
        )


def _switch(
    platform: Platform,
    lease: leases.Kept,
    service_id: str,
    slot: int,
    name: str,
    old: str | None,
    new: str,
    version: int,
) -> None:
    """Once `new` answers, the replica of `slot` switches to it from `old`, which goes; a `new`
    that does not answer goes instead. A replica changed meanwhile (a deploy switched it, the
    service was stopped or deleted, another server took the service over) keeps what it has."""
    address = _answering(platform, lease, service_id, new)
    switched = there = False
    with platform.services_lock:
        with platform.store.session() as s:
            svc = s.get(ServiceRow, service_id)
            row = s.get(ServiceReplicaRow, (service_id, slot))
            there = svc is not None and svc.desired != "stopped" and row is not None
            if address is not None and there and row is not None and row.container == old and lease.keep():
                row.container, row.address, row.state = new, address, ServiceState.RUNNING.value
                row.version, row.started_at, row.next_start_at, row.quick_crashes = version, utcnow(), None, 0
                deployed_logs.ship(platform, s, service_id, new)  # what it printed coming up
                switched = True
        if switched:
            gone = takedown.claim(platform, service_id, [old], routing.RESTARTING, REASON)
            takedown.in_hand(platform).release([new])  # a replica points at it now
        else:
            gone = takedown.claim(platform, service_id, [new], routing.GOING_AWAY, REASON)
    routing.of(platform).changed()
    output = deployed_logs.read_container(platform, service_id, new) if address is None else ""
    gone.run()
    if address is None and there:
        text = deployed_logs.tail(output, 10).strip()
        last = f" Its last output:\n{text}" if text else ""
        raise ServiceUnavailable(
            f"{name}'s restart stopped at replica {slot}: its new container did not answer on port "
            f"{PORT} within {platform.config.service_start_timeout} s. The replica's old container "
            f"serves on, and so do the replicas after it.{last}",
            "See the service's logs; restart it again once it answers.",
        )


def _answering(platform: Platform, lease: leases.Kept, service_id: str, container: str) -> str | None:
    """Where `container` answers on PORT, once it does (within ORCH_SERVICE_START_TIMEOUT); None
    if it exits or does not answer in time."""
    deadline = time.monotonic() + float(platform.config.service_start_timeout)
    address = None
    while time.monotonic() < deadline and not platform.stopping.is_set():
        lease.keep()  # renewed through the wait (the switch checks it is still held)
        found = platform.engine.list_containers({"org.orch.service": service_id})
        info = next((c for c in found if c.name == container), None)
        if info is None or not info.running:
            return None
        address = address or platform.engine.container_address(container)
        if address and platform.probe(address, PORT):
            return address
        time.sleep(POLL)
    return None


def serving(platform: Platform, service_id: str) -> None:
    """Wait until each replica of a service started afresh (a stopped one restarted) serves.
    ServiceUnavailable when one does not within `_patience`: its start goes on."""
    with platform.store.session() as s:
        svc = s.get(ServiceRow, service_id)
        name = svc.name if svc is not None else service_id
        slots = [r.slot for r in replicas(s, service_id)]
    for slot in slots:
        if not _serves_again(platform, service_id, slot):
            raise ServiceUnavailable(
                f"{name}'s replica {slot} did not serve within {_patience(platform):.0f} s of its start.",
                "See the service's status and its logs.",
            )


def _patience(platform: Platform) -> float:
    """How long a renewed replica may take to serve again: its holder's next pass (a lease, if
    the holder changes meanwhile), then its start."""
    return float(platform.config.service_start_timeout) + leases.LEASE_SECONDS


def _serves_again(platform: Platform, service_id: str, slot: int) -> bool:
    """Wait until the replica of `slot` serves again (its holder's supervisor starts it); True
    also when there is nothing to wait for any more (the service was stopped or deleted)."""
    platform.wake_supervisor.set()
    deadline = time.monotonic() + _patience(platform)
    while time.monotonic() < deadline and not platform.stopping.is_set():
        with platform.store.session() as s:
            svc = s.get(ServiceRow, service_id)
            row = s.get(ServiceReplicaRow, (service_id, slot))
            if svc is None or svc.desired == "stopped" or row is None:
                return True
            if row.state == ServiceState.RUNNING.value and row.container:
                return True
        time.sleep(POLL)
    return False
