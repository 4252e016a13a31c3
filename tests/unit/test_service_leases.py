"""Services' leases (services/leases.py) on one store shared by two platforms, on SQLite and on
PostgreSQL: racing passes never give one service to both; a lease is renewed by its holder,
taken once it expired, handed over, and released."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from orch.config import Config
from orch.models import new_id
from orch.services import leases, nodes
from orch.services.platform import Platform
from orch.store import Store
from orch.store.schema import NodeRow, ServiceLeaseRow, ServiceRow, utcnow

SERVICES = 30
THREADS = 3  # per platform


@pytest.fixture
def other(platform: Platform, tmp_path: Path) -> Iterator[Platform]:
    """A platform of another ORCH_HOME (another instance) on the same store."""
    p = Platform(
        Config(tmp_path / "other-home", platform.config.values), Store(platform.store.url), platform.engine
    )
    assert p.instance != platform.instance
    yield p
    p.store.dispose()


def services(platform: Platform, ws_id: str, n: int) -> list[str]:
    with platform.store.session() as s:
        rows = [
            ServiceRow(id=new_id("svc"), workspace_id=ws_id, name=f"s{i}", state="running", last_output="")
            for i in range(n)
        ]
        s.add_all(rows)
        return [r.id for r in rows]


def expire(platform: Platform, service_id: str) -> None:
    with platform.store.session() as s:
        s.execute(
            update(ServiceLeaseRow)
            .where(ServiceLeaseRow.service_id == service_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def test_racing_passes_never_hold_one_service_twice(
    platform: Platform, other: Platform, workspace: tuple[str, str]
) -> None:
    ids = set(services(platform, workspace[0], SERVICES))
    held: dict[str, list[frozenset[str]]] = {platform.instance: [], other.instance: []}
    start = threading.Barrier(THREADS * 2)

    def passes(p: Platform) -> None:
        start.wait()
        for _ in range(3):
            held[p.instance].append(leases.take(p).ids)

    threads = [threading.Thread(target=passes, args=(p,)) for p in (platform, other) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    mine = frozenset().union(*held[platform.instance])
    theirs = frozenset().union(*held[other.instance])
    assert not mine & theirs  # no service was ever held by both
    assert mine | theirs == ids  # and every one by someone
    with platform.store.session() as s:
        assert s.query(ServiceLeaseRow).count() == SERVICES


def test_a_lease_is_renewed_taken_when_expired_handed_over_and_released(
    platform: Platform, other: Platform, workspace: tuple[str, str]
) -> None:
    (first,) = services(platform, workspace[0], 1)
    assert leases.take(platform).ids == {first}
    assert leases.take(other).ids == frozenset() and not leases.take_one(other, first)
    assert leases.take(platform).ids == {first}  # renewed by its holder
    expire(platform, first)
    taken = leases.take(other)
    assert taken.ids == {first} and taken.taken_from == {first: platform.instance}
    assert leases.take(platform).ids == frozenset()  # the old holder does not get it back
    assert leases.take(other).taken_from == {}  # its own: renewed, not taken
    with other.store.session() as s:
        assert leases.hand_over(s, other, first, platform.instance)
    assert leases.holder(platform, first) == platform.instance
    assert leases.take_one(platform, first) and not leases.take_one(other, first)
    assert leases.release(other) == 0 and leases.release(platform) == 1
    assert leases.holder(platform, first) is None
    assert leases.take_one(other, first)  # no row: taken
    assert not leases.take_one(platform, "svc_gone")  # no such service: nothing to hold


def test_a_lease_goes_with_its_service(platform: Platform, workspace: tuple[str, str]) -> None:
    (first,) = services(platform, workspace[0], 1)
    leases.take(platform)
    with platform.store.session() as s:
        s.delete(s.get(ServiceRow, first))
    with platform.store.session() as s:
        assert s.query(ServiceLeaseRow).count() == 0


def test_nodes_of_a_cluster_take_an_even_share_of_free_services(
    platform: Platform, other: Platform, workspace: tuple[str, str]
) -> None:
    """One machine's server takes every free service; a cluster's node takes its share among
    the nodes that are up (rounded up), and the rest once the others are lost."""
    ids = set(services(platform, workspace[0], 7))
    for p, name in ((platform, "a"), (other, "b")):
        p.node = name
        nodes.register(p, nodes.Joining(id=name, address="127.0.0.1", cpus=2, memory=2**33, slots=2))
    mine = leases.take(platform).ids
    assert len(mine) == 4  # 7 services over 2 nodes
    assert leases.take(platform).ids == mine  # renewed, no more taken
    theirs = leases.take(other).ids
    assert len(theirs) == 3 and mine | theirs == ids
    for service_id in theirs:  # b stops renewing, and is declared lost
        expire(other, service_id)
    with platform.store.session() as s:
        s.execute(update(NodeRow).where(NodeRow.id == "b").values(state=nodes.LOST))
    held = leases.take(platform)
    assert held.ids == ids and held.taken_from == dict.fromkeys(theirs, other.instance)
    other.node = None  # as one machine's server: no share
    for service_id in ids:
        expire(platform, service_id)
    assert leases.take(other).ids == ids


def test_a_lease_long_expired_is_taken_whatever_the_share(
    platform: Platform, other: Platform, workspace: tuple[str, str]
) -> None:
    """A node that is up but does not supervise (its leases expire while its heartbeat goes on)
    keeps no service down for good: a lease expired for a whole lease more is taken past the
    share."""
    ids = services(platform, workspace[0], 2)
    for p, name in ((platform, "a"), (other, "b")):
        p.node = name
        nodes.register(p, nodes.Joining(id=name, address="127.0.0.1", cpus=2, memory=2**33, slots=2))
    mine = leases.take(platform).ids
    theirs = leases.take(other).ids
    assert len(mine) == len(theirs) == 1
    (stuck,) = theirs
    expire(other, stuck)  # b is still up: a's share (1 of 2) is full
    assert leases.take(platform).ids == mine
    with platform.store.session() as s:
        long_ago = utcnow() - timedelta(seconds=leases.LEASE_SECONDS + 1)
        stuck_lease = update(ServiceLeaseRow).where(ServiceLeaseRow.service_id == stuck)
        s.execute(stuck_lease.values(expires_at=long_ago))
    assert leases.take(platform).ids == set(ids)
