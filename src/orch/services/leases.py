"""One supervisor per service when several platforms share a store: each service has a lease
(`service_leases`: the holder's instance, and until when), and only its holder acts on the
service's containers. The supervisor renews its leases at every pass (every second) and takes
the ones no one holds or whose holder stopped renewing (expired); the deploy worker takes the
lease of the service it deploys before it starts containers (docs/services.md, "More than one
server").

Every take is a conditional write, so two platforms racing for one service never both get it:
an UPDATE whose WHERE says "mine, or expired" (on PostgreSQL the second UPDATE waits for the
first's row lock and then finds the row no longer matches; on SQLite writers take turns), or an
INSERT that does nothing when a row is there already. Each write is a transaction of its own:
none holds a lock while it waits for another's, so two passes can't deadlock.

Times are each machine's clock (UTC): the machines of one store must agree within a fraction of
LEASE_SECONDS (NTP does)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from orch.services.nodes import UP
from orch.services.platform import Platform
from orch.store.schema import NodeRow, ServiceLeaseRow, ServiceRow, utcnow

# How long a lease lasts unless renewed: a platform that stops renewing (killed, cut off) has
# its services taken over this long after its last pass. Against the supervisor's 1 s poll, ten
# passes may fail in a row (a slow store, a long `podman ps`) before the service moves.
LEASE_SECONDS = 10.0


@dataclass(frozen=True)
class Held:
    """What a supervisor pass may act on: the services whose lease this platform holds, and of
    those, the ones it has just taken over from another holder (service id -> that holder)."""

    ids: frozenset[str]
    taken_from: dict[str, str] = field(default_factory=dict)


def _until() -> datetime:
    return utcnow() + timedelta(seconds=LEASE_SECONDS)


def _changed(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


def _insert(s: Session) -> Any:
    """An INSERT into service_leases that does nothing where a row is there already."""
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(ServiceLeaseRow)


def take(platform: Platform) -> Held:
    """Renew this platform's leases, take those of services that have none and those their
    holder let expire, up to this platform's share; return what it holds now."""
    me, now, until = platform.instance, utcnow(), _until()
    store = platform.store
    with store.session() as s:
        s.execute(update(ServiceLeaseRow).where(ServiceLeaseRow.holder == me).values(expires_at=until))
        room = _room(s, platform)
    if room > 0:
        with store.session() as s:
            leased = select(ServiceLeaseRow.service_id)
            new = (
                select(ServiceRow.id, _literal(me), _literal(until))
                .where(ServiceRow.id.not_in(leased))
                .order_by(ServiceRow.created_at)
                .limit(room)
            )
            inserted = s.execute(
                _insert(s)
                .from_select(["service_id", "holder", "expires_at"], new)
                .on_conflict_do_nothing(index_elements=["service_id"])
                .returning(ServiceLeaseRow.service_id)
            )
            room -= len(inserted.all())
    taken: dict[str, str] = {}
    with store.session() as s:
        expired = s.execute(
            select(ServiceLeaseRow.service_id, ServiceLeaseRow.holder, ServiceLeaseRow.expires_at).where(
                ServiceLeaseRow.holder != me, ServiceLeaseRow.expires_at < now
            )
        ).all()
    # Past the share too once a lease has lain expired for a whole lease more: its holder may be
    # a node that is up but does not supervise (nothing else would take its services then).
    long_ago = now - timedelta(seconds=LEASE_SECONDS)
    for service_id, holder, expires_at in expired:
        if room <= 0 and expires_at >= long_ago:
            continue
        with store.session() as s:
            if _take_from(s, service_id, holder, now, me, until):
                taken[service_id] = holder
                room -= 1
    with store.session() as s:
        ids = s.scalars(
            select(ServiceLeaseRow.service_id).where(
                ServiceLeaseRow.holder == me, ServiceLeaseRow.expires_at > utcnow()
            )
        ).all()
    return Held(frozenset(ids), taken)


def _room(s: Session, platform: Platform) -> int:
    """How many more services this platform may take from no one (or from a holder that let
    them expire): all of them on one machine; on a cluster, up to an even share of the services
    among the nodes that are up, so that services spread over the nodes (a deploy still takes
    its service's lease whatever the share). What a node that is up does not take within its
    pass is taken by the others once it is declared lost; a lease expired for a whole lease
    more is taken whatever the share (`take`)."""
    me, now = platform.instance, utcnow()
    total = s.scalar(select(func.count()).select_from(ServiceRow)) or 0
    mine = s.scalar(
        select(func.count())
        .select_from(ServiceLeaseRow)
        .where(ServiceLeaseRow.holder == me, ServiceLeaseRow.expires_at > now)
    )
    if platform.node is None:
        return total - (mine or 0)
    supervisors = set(s.scalars(select(NodeRow.instance).where(NodeRow.state == UP))) | {me}
    return -(-total // len(supervisors)) - (mine or 0)  # the share, rounded up


def _literal(value: object) -> Any:
    column = ServiceLeaseRow.expires_at if isinstance(value, datetime) else ServiceLeaseRow.holder
    return literal(value, type_=column.type)


def _take_from(s: Session, service_id: str, holder: str, now: datetime, me: str, until: datetime) -> bool:
    """Take `service_id`'s lease from `holder`, if it is still theirs and still expired."""
    result = s.execute(
        update(ServiceLeaseRow)
        .where(
            ServiceLeaseRow.service_id == service_id,
            ServiceLeaseRow.holder == holder,
            ServiceLeaseRow.expires_at < now,
        )
        .values(holder=me, expires_at=until)
    )
    return _changed(result) == 1


def take_one(platform: Platform, service_id: str) -> bool:
    """Hold `service_id`'s lease (renewed if this platform holds it, taken if no one does or its
    holder let it expire); False: another platform holds it."""
    me, now, until = platform.instance, utcnow(), _until()
    with platform.store.session() as s:
        mine_or_expired = (ServiceLeaseRow.holder == me) | (ServiceLeaseRow.expires_at < now)
        result = s.execute(
            update(ServiceLeaseRow)
            .where(ServiceLeaseRow.service_id == service_id, mine_or_expired)
            .values(holder=me, expires_at=until)
        )
        if _changed(result) == 1:
            return True
    with platform.store.session() as s:
        if s.get(ServiceRow, service_id) is None:
            return False
        insert = _insert(s).values(service_id=service_id, holder=me, expires_at=until)
        # (RETURNING says whether it inserted: psycopg reports no row count for this statement.)
        inserted = insert.on_conflict_do_nothing(index_elements=["service_id"]).returning(
            ServiceLeaseRow.service_id
        )
        return s.execute(inserted).first() is not None


def hand_over(s: Session, platform: Platform, service_id: str, to: str) -> bool:
    """Give this platform's lease of `service_id` to platform `to` (whose deploy worker waits for
    it), for a whole lease: if `to` is gone, it expires and is taken over as any other."""
    result = s.execute(
        update(ServiceLeaseRow)
        .where(ServiceLeaseRow.service_id == service_id, ServiceLeaseRow.holder == platform.instance)
        .values(holder=to, expires_at=_until())
    )
    return _changed(result) == 1


def holder(platform: Platform, service_id: str) -> str | None:
    """The instance holding `service_id`'s lease now (None: no one)."""
    with platform.store.session() as s:
        row = s.get(ServiceLeaseRow, service_id)
        return row.holder if row is not None and row.expires_at > utcnow() else None


def release(platform: Platform) -> int:
    """Give up every lease this platform holds (a clean stop): another platform takes its
    services over at its next pass, not a whole lease later. Return how many."""
    with platform.store.session() as s:
        return _changed(s.execute(delete(ServiceLeaseRow).where(ServiceLeaseRow.holder == platform.instance)))


@dataclass
class Kept:
    """A lease kept through a long task (a deployment's rollout): `acquire` waits for it, `keep`
    renews it once a third of it has passed and says whether it is still held."""

    platform: Platform
    service_id: str
    _renewed: float = 0.0

    def acquire(self, stop: threading.Event, wait: float | None = None) -> bool:
        """Wait (at most `wait` seconds; default a lease and a half: a holder that is gone lets it
        expire, one that is there hands it over at its next pass) until the lease is this
        platform's; False if it never was."""
        deadline = time.monotonic() + (LEASE_SECONDS * 1.5 if wait is None else wait)
        while not stop.is_set():
            if take_one(self.platform, self.service_id):
                self._renewed = time.monotonic()
                return True
            if time.monotonic() >= deadline:
                return False
            stop.wait(0.1)
        return False

    def keep(self) -> bool:
        if time.monotonic() - self._renewed < LEASE_SECONDS / 3:
            return True
        if take_one(self.platform, self.service_id):
            self._renewed = time.monotonic()
            return True
        return False
