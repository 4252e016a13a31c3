"""`orch service restart` replaces the replicas one at a time, as a deploy does; restart, stop and
delete drain and stop containers without the services' lock, which is every workspace's (the
supervisor's passes, other workspaces' deploys and commands go on meanwhile). On the fake engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services import deployed as use_cases
from orch.services import reconcile, routing, takedown
from orch.services.platform import Platform
from orch.store.schema import ServiceReplicaRow
from tests.api.test_service_replicas import deployed


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


def serving(platform: Platform) -> list[str]:
    """The containers of the replicas that serve (what the proxy sends requests to)."""
    with platform.store.session() as s:
        rows = s.query(ServiceReplicaRow).order_by(ServiceReplicaRow.slot).all()
        return [r.container for r in rows if r.container and r.state == "running"]


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_restart_replaces_the_replicas_one_at_a_time(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    replicas: int,
) -> None:
    """Before, every replica was removed first and the supervisor started new ones: a restart was
    an outage (10 s and more for a process that ignores SIGTERM)."""
    svc = deployed(api, platform, tmp_path, replicas)
    first = [r["container"] for r in svc["replicas"]]
    events: list[tuple[str, int]] = []
    start, remove = fake_engine.start_container, fake_engine.remove_container

    def started(*args: object) -> str:
        events.append(("start", len(serving(platform))))
        return start(*args)  # type: ignore[arg-type]

    def removed(name: str, timeout: int = 10) -> None:
        events.append(("stop", len(serving(platform))))
        remove(name)

    monkeypatch.setattr(fake_engine, "start_container", started)
    monkeypatch.setattr(fake_engine, "remove_container", removed)
    answer = api.post("/v1/services/web/restart")
    assert answer.status_code == 200, answer.text
    restarted = answer.json()
    # A new container next to each serving one, then the old one goes: every replica serves
    # throughout, and never more than one container runs beyond the replicas.
    assert events == [("start", replicas), ("stop", replicas)] * replicas
    assert restarted["state"] == "running" and restarted["restarts"] == 0
    now = [r["container"] for r in restarted["replicas"]]
    assert [r["state"] for r in restarted["replicas"]] == ["running"] * replicas
    assert not set(now) & set(first) and sorted(fake_engine.detached) == sorted(now)


def test_a_new_container_that_does_not_answer_stops_the_restart_and_the_old_ones_serve_on(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(api, platform, tmp_path, 2)
    first = [r["container"] for r in svc["replicas"]]
    platform.probe = lambda address, port: False
    platform.config = platform.config.with_values(service_start_timeout=1)
    answer = api.post("/v1/services/web/restart")
    assert answer.status_code == 503
    assert answer.json()["message"].startswith(
        "web's restart stopped at replica 0: its new container did not answer on port 8080 within 1 s. "
        "The replica's old container serves on, and so do the replicas after it."
    )
    assert serving(platform) == first and sorted(fake_engine.detached) == sorted(first)


def test_a_replica_that_does_not_serve_is_renewed_at_once_its_backoff_forgotten(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(api, platform, tmp_path, 2)
    first, second = (r["container"] for r in svc["replicas"])
    fake_engine.exit_container(second, 1)
    reconcile.reconcile(platform)  # restarting, after its backoff
    restarted = api.post("/v1/services/web/restart").json()
    assert restarted["state"] == "running"
    assert [r["state"] for r in restarted["replicas"]] == ["running", "running"]
    assert not {r["container"] for r in restarted["replicas"]} & {first, second}


def blocked_removal(
    fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event, list[str]]:
    """The engine's removals wait (as `podman rm -t 10` of a process that ignores SIGTERM) until
    `go` is set; `waiting` is set once one waits; `removed` says which, in order."""
    go, waiting = threading.Event(), threading.Event()
    removed: list[str] = []
    remove = fake_engine.remove_container

    def slow(name: str, timeout: int = 10) -> None:
        removed.append(name)
        waiting.set()
        assert go.wait(10)
        remove(name)

    monkeypatch.setattr(fake_engine, "remove_container", slow)
    return go, waiting, removed


def in_a_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def lock_is_free(platform: Platform) -> bool:
    """Whether another thread (another workspace's command, the supervisor) gets the services'
    lock at once."""
    got = platform.services_lock.acquire(timeout=1)
    if got:
        platform.services_lock.release()
    return got


@pytest.mark.parametrize("command", ["restart", "stop", "delete"])
def test_containers_are_stopped_without_the_services_lock(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """Before, restart, stop and delete held the platform's one lock while each replica was
    drained and stopped (up to 10 s each): no service of any workspace was restarted after a
    crash, and no deploy accepted, meanwhile; the commands themselves timed out in the CLI."""
    svc = deployed(api, platform, tmp_path, 2)
    old = [r["container"] for r in svc["replicas"]]
    go, waiting, removed = blocked_removal(fake_engine, monkeypatch)
    call = {
        "restart": lambda: use_cases.restart(platform, workspace[0], "web"),
        "stop": lambda: use_cases.stop(platform, workspace[0], "web"),
        "delete": lambda: use_cases.delete_service(platform, workspace[0], "web"),
    }[command]
    thread, out = in_a_thread(call)
    try:
        assert waiting.wait(10)
        assert lock_is_free(platform)
        # A supervisor pass meanwhile leaves the containers being stopped alone (they are in
        # hand, not orphans): only the command removes them, each once, drained first.
        assert set(takedown.in_hand(platform).names()) & set(old)
        reconcile.reconcile(platform, settle=False)
        time.sleep(0.2)
        assert len(removed) == len(set(removed)) and set(removed) <= set(old)
    finally:
        go.set()
        thread.join(10)
    assert not thread.is_alive() and out
    assert not set(fake_engine.detached) & set(old)
    assert takedown.in_hand(platform).names() == set()


def test_a_drain_of_a_request_in_flight_holds_no_lock(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path, workspace: tuple[str, str]
) -> None:
    svc = deployed(api, platform, tmp_path, 1)
    end = routing.of(platform).begin(svc["container"])  # a request in flight: the stop waits for it
    thread, out = in_a_thread(lambda: use_cases.stop(platform, workspace[0], "web"))
    try:
        deadline = time.monotonic() + 5
        while svc["container"] not in routing.of(platform)._draining:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert lock_is_free(platform) and svc["container"] in fake_engine.detached
    finally:
        end()
        thread.join(10)
    assert out and fake_engine.detached == {}


def test_a_stopped_service_s_route_has_no_replica_from_the_stop_on(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """While its containers are drained and stopped (by its holder, perhaps another server), no
    new request goes to them."""
    deployed(api, platform, tmp_path, 2)
    with platform.store.session() as s:
        from orch.store.schema import ServiceRow

        s.query(ServiceRow).update({"desired": "stopped"})
    routes = routing.of(platform)
    routes.changed()
    route = routes.lookup("team", "web")
    assert route is not None and route.backends == () and route.state == "stopped"


def test_a_stop_waits_for_the_containers_the_supervisor_is_taking_down(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A supervisor's pass may take the stopped service's containers down first (in threads of
    its own): `orch service stop` still answers once they are gone."""
    svc = deployed(api, platform, tmp_path, 2)
    go, waiting, _ = blocked_removal(fake_engine, monkeypatch)
    with platform.store.session() as s:
        from orch.store.schema import ServiceRow

        s.query(ServiceRow).update({"desired": "stopped"})
    reconcile.reconcile(platform, settle=False)  # the supervisor's pass: its takedown goes on
    assert waiting.wait(10)
    thread, out = in_a_thread(lambda: use_cases.stop(platform, workspace[0], "web"))
    time.sleep(0.5)
    assert thread.is_alive()
    go.set()
    thread.join(10)
    assert out and not set(fake_engine.detached) & {r["container"] for r in svc["replicas"]}
