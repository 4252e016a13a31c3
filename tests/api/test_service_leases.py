"""Two platforms (two machines, each with its own engine) on one store, on the fake engine: only
the holder of a service's lease starts its containers; a holder that stops renewing is taken
over and its replicas are started on the taker's engine; a clean stop hands them over at once;
a deploy on one platform takes the lease from the other's supervisor before it switches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, update

from orch.engine.fake import FakeEngine
from orch.services import deployed as use_cases
from orch.services import leases, reconcile, restarts
from orch.services.platform import Platform
from orch.store.schema import ServiceDeploymentRow, ServiceLeaseRow, ServiceReplicaRow, utcnow
from orch.workers import deploys
from orch.workers.supervisor import Supervisor
from tests.api.test_registry_runs import REGISTRY, another_machine
from tests.api.test_service_replicas import deployed
from tests.api.test_services import bundle, deploy, work


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


@pytest.fixture
def machine_b(
    platform: Platform, fake_engine: FakeEngine, database_url: str, tmp_path: Path
) -> Iterator[tuple[Platform, FakeEngine]]:
    """A second platform on the store, with an engine (and so containers and images) of its own;
    both reach one registry, so either can start what the other built."""
    settings = {"registry": REGISTRY, "registry_tls_verify": False}
    platform.config = platform.config.with_values(**settings)
    with another_machine(tmp_path, database_url, fake_engine, **settings) as (other, engine):
        other.probe = lambda address, port: True
        assert other.instance != platform.instance
        yield other, engine


def expire(platform: Platform) -> None:
    """As if `platform` had stopped renewing its leases a while ago (killed, cut off)."""
    with platform.store.session() as s:
        s.execute(
            update(ServiceLeaseRow)
            .where(ServiceLeaseRow.holder == platform.instance)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def containers_of(platform: Platform) -> list[str | None]:
    with platform.store.session() as s:
        return [r.container for r in s.query(ServiceReplicaRow).order_by(ServiceReplicaRow.slot)]


def wait_for(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_only_the_holder_starts_a_services_containers(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    machine_b: tuple[Platform, FakeEngine],
    tmp_path: Path,
) -> None:
    other, engine_b = machine_b
    svc = deployed(api, platform, tmp_path, 2)
    assert svc["state"] == "running" and len(fake_engine.detached) == 2
    assert leases.holder(platform, svc["id"]) == platform.instance
    before = containers_of(platform)
    for _ in range(3):
        reconcile.reconcile(other)
    assert engine_b.started == [] and containers_of(platform) == before
    assert leases.holder(platform, svc["id"]) == platform.instance

    # Both supervisors race for services that no one holds and that have no container yet: every
    # replica is started once, by one platform, and each service's replicas are on one machine.
    for name in ("b", "c"):
        assert deploy(api, name, bundle(tmp_path, {"main.py": ""}, name)).status_code == 201
    work(platform)
    with platform.store.session() as s:
        s.execute(delete(ServiceLeaseRow))
        s.execute(delete(ServiceReplicaRow))
    fake_engine.detached.clear()
    started = len(fake_engine.started)
    barrier = threading.Barrier(2)

    def passes(p: Platform) -> None:
        barrier.wait()
        for _ in range(4):
            reconcile.reconcile(p)

    threads = [threading.Thread(target=passes, args=(p,)) for p in (platform, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert (len(fake_engine.started) - started) + len(engine_b.started) == 4  # none twice
    assert len(fake_engine.detached) + len(engine_b.detached) == 4
    for name in ("web", "b", "c"):
        shown = api.get(f"/v1/services/{name}").json()
        holder = leases.holder(platform, shown["id"])
        engine = fake_engine if holder == platform.instance else engine_b
        assert holder in (platform.instance, other.instance) and shown["state"] == "running"
        assert all(r["container"] in engine.detached for r in shown["replicas"])


def test_a_holder_that_stops_renewing_is_taken_over(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    machine_b: tuple[Platform, FakeEngine],
    tmp_path: Path,
) -> None:
    other, engine_b = machine_b
    svc = deployed(api, platform, tmp_path, 2)
    mine = containers_of(platform)
    reconcile.reconcile(other)
    assert engine_b.started == []
    expire(platform)  # platform A is gone: its lease runs out, its containers are out of reach
    reconcile.reconcile(other)
    assert leases.holder(other, svc["id"]) == other.instance
    taken = containers_of(other)
    assert sorted(c for c in taken if c) == sorted(engine_b.detached) and len(engine_b.detached) == 2
    assert not set(taken) & set(mine)
    after = api.get("/v1/services/web").json()
    # Started at once, of the serving version, with no crash counted: the service did not crash.
    assert after["state"] == "running" and after["restarts"] == 0 and after["last_exit"] is None
    assert [s.labels["org.orch.version"] for s in engine_b.started] == ["1", "1"]
    # A comes back: it holds nothing now, and removes its own containers that no replica points at.
    reconcile.reconcile(platform)
    assert fake_engine.detached == {} and sorted(engine_b.detached) == sorted(c for c in taken if c)
    assert leases.holder(platform, svc["id"]) == other.instance


def test_a_clean_stop_releases_the_leases_and_the_other_takes_over_at_once(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    machine_b: tuple[Platform, FakeEngine],
    tmp_path: Path,
) -> None:
    other, engine_b = machine_b
    svc = deployed(api, platform, tmp_path, 1)
    first, second = Supervisor(platform, poll=0.05), Supervisor(other, poll=0.05)
    first.start()
    second.start()
    try:
        time.sleep(0.5)  # ten passes each: the lease (10 s) stays with its holder
        assert engine_b.started == [] and leases.holder(platform, svc["id"]) == platform.instance
        first.stop()  # released: B takes it at its next pass, not a whole lease later
        wait_for(lambda: len(engine_b.detached) == 1 and containers_of(other) == list(engine_b.detached))
        assert leases.holder(other, svc["id"]) == other.instance
    finally:
        first.stop()
        second.stop()
    with other.store.session() as s:
        assert s.query(ServiceLeaseRow).count() == 0  # B's stop released it too


def test_a_killed_supervisor_is_taken_over_when_its_lease_expires(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    machine_b: tuple[Platform, FakeEngine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other, engine_b = machine_b
    monkeypatch.setattr(leases, "LEASE_SECONDS", 1.5)
    svc = deployed(api, platform, tmp_path, 2)
    first, second = Supervisor(platform, poll=0.05), Supervisor(other, poll=0.05)
    first.start()
    second.start()
    try:
        time.sleep(0.5)
        assert engine_b.started == []
        first.stop(release=False)  # as a killed server: nothing released, nothing renewed
        killed = time.monotonic()
        wait_for(
            lambda: len(engine_b.detached) == 2 and sorted(containers_of(other)) == sorted(engine_b.detached)
        )
        assert time.monotonic() - killed >= 1.0  # not before the lease ran out
        assert leases.holder(other, svc["id"]) == other.instance
        assert len(fake_engine.detached) == 2  # A's containers outlive it, out of B's reach
    finally:
        first.stop(release=False)
        second.stop()


def test_a_deploy_on_another_platform_takes_the_lease_before_it_switches(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    machine_b: tuple[Platform, FakeEngine],
    tmp_path: Path,
) -> None:
    other, engine_b = machine_b
    svc = deployed(api, platform, tmp_path, 2)
    v1 = containers_of(platform)
    files = {"main.py": "# v2\n", "orch.yaml": "replicas: 2\n"}
    assert deploy(api, "web", bundle(tmp_path, files, "v2")).status_code == 201
    supervisor = Supervisor(platform, poll=0.05)  # A supervises the service all along
    supervisor.start()
    try:
        started_by_a = len(fake_engine.started)
        dep = deploys.claim(other)
        assert dep is not None
        deploys.execute(other, dep)  # B waits for A to hand the lease over, then switches
        shown = api.get("/v1/services/web/deployments/2").json()
        assert shown["status"] == "ready", shown
        assert leases.holder(platform, svc["id"]) == other.instance
        assert [s.labels["org.orch.version"] for s in engine_b.started] == ["2", "2"]
        assert sorted(containers_of(other)) == sorted(engine_b.detached)
        # A started nothing meanwhile, and removes its v1 containers, which no replica points at.
        wait_for(lambda: fake_engine.detached == {})
        assert len(fake_engine.started) == started_by_a and not set(v1) & set(engine_b.detached)
    finally:
        supervisor.stop()
    after = api.get("/v1/services/web").json()
    assert (after["version"], after["state"], after["restarts"]) == (2, "running", 0)


def test_a_deploy_whose_server_is_gone_is_failed_by_the_taker(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    machine_b: tuple[Platform, FakeEngine],
    tmp_path: Path,
) -> None:
    """B claimed v2 and took the lease to switch, then died: A takes the service back once the
    lease runs out, runs v1 on, and records v2 as failed (no deploy worker renews it any more)."""
    other, _engine_b = machine_b
    svc = deployed(api, platform, tmp_path, 1)
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "# v2\n"}, "v2")).status_code == 201
    dep = deploys.claim(other)
    assert dep is not None
    with platform.store.session() as s:
        s.execute(
            update(ServiceDeploymentRow).where(ServiceDeploymentRow.id == dep).values(status="starting")
        )
        s.execute(
            update(ServiceLeaseRow)
            .where(ServiceLeaseRow.service_id == svc["id"])
            .values(holder=other.instance, expires_at=utcnow() - timedelta(seconds=1))
        )
    reconcile.reconcile(platform)
    failed = api.get("/v1/services/web/deployments/2").json()
    assert failed["status"] == "failed" and "stopped renewing the service's lease" in failed["error"]
    after = api.get("/v1/services/web").json()
    assert (after["version"], after["state"]) == (1, "running") and "v2 was not deployed" in after["error"]
    assert leases.holder(platform, svc["id"]) == platform.instance


def test_a_stop_or_restart_through_another_server_is_carried_out_by_the_holder(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    machine_b: tuple[Platform, FakeEngine],
    workspace: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other, engine_b = machine_b
    deployed(api, platform, tmp_path, 2)
    first = containers_of(platform)
    monkeypatch.setattr(restarts, "POLL", 0.5)  # B's looks at the store: slower than A's passes here
    # Through B's API: rows change only, one replica at a time. B renews the first and waits
    # for it to serve again (A, the holder, replaces its container) before it renews the second.
    seen: list[list[str | None]] = []
    restarted = []
    thread = threading.Thread(target=lambda: restarted.append(use_cases.restart(other, workspace[0], "web")))
    thread.start()
    while thread.is_alive():
        seen.append(containers_of(platform))
        reconcile.reconcile(platform)
        time.sleep(0.05)
    thread.join()
    assert engine_b.started == [] and len(restarted) == 1
    replica = restarted[0].replicas[0]
    assert replica.state == "running" and replica.container not in first
    # Never both at once: while the first was renewed, the second served on.
    assert not [c for c in seen if c == [None, None]]
    assert any(c[0] not in (None, first[0]) and c[1] == first[1] for c in seen)
    reconcile.reconcile(platform)  # A, the holder, removes the old containers and starts new ones
    now = containers_of(platform)
    assert len(now) == 2 and not set(now) & set(first) and sorted(now) == sorted(fake_engine.detached)
    assert use_cases.stop(other, workspace[0], "web").state != "stopped"  # B does not act on it
    reconcile.reconcile(platform)
    assert fake_engine.detached == {} and engine_b.started == []
    assert api.get("/v1/services/web").json()["state"] == "stopped"
