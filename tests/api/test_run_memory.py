"""Runs wait for memory: the sum of their sandboxes' memory limits, and of the sandboxes on
demand held open, stays within `run_memory` (services/run_memory.py), in the order they came; a
cancel ends a waiting run; a sandbox's create waits in the same line, then is refused with 503."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.errors import EngineError
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.services import sandboxes
from orch.services.platform import Platform
from orch.services.run_memory import Budget
from orch.services.sandboxes import DEFAULT_TIMEOUT
from orch.store.schema import SandboxRow, utcnow
from orch.workers import runs as run_worker
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_metrics import scrape, value
from tests.conftest import drain_runs

MiB = 2**20


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def _executing(platform: Platform) -> threading.Thread:
    """A worker taking the next queued run to its end, in a thread of its own."""
    run_id = run_worker.claim(platform)
    assert run_id is not None
    worker = threading.Thread(target=run_worker.execute, args=(platform, run_id), daemon=True)
    worker.start()
    return worker


def _agent_asking(api: httpx.Client, platform: Platform, tmp_path: Path, name: str, memory: str) -> None:
    """A budget of 1 GiB for runs, and an agent whose sandbox asks for `memory` of it."""
    platform.run_memory = Budget(1024 * MiB)
    agent = {"main.py": "print('hi')\n", "orch.yaml": f"name: {name}\nresources: {{memory: {memory}}}\n"}
    assert publish(api, name, bundle(tmp_path, agent)).status_code == 201


def test_a_run_over_the_memory_budget_waits_for_one_to_end_and_a_cancel_ends_a_waiting_one(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    _agent_asking(api, platform, tmp_path, "big", "768Mi")
    release = threading.Event()

    def holds(
        spec: ContainerSpec, out: Callable[[bytes], None], err: Callable[[bytes], None]
    ) -> ContainerExit:
        release.wait(30)
        return ContainerExit(0)

    fake_engine.behaviour = holds
    ids = [api.post("/v1/runs", json={"agent": "big"}).json()["id"] for _ in range(3)]
    workers = [_executing(platform) for _ in ids]
    try:
        _until(lambda: len(fake_engine.containers) == 1 and platform.run_memory.waiting == 2, "two waiting")
        time.sleep(0.2)
        assert len(fake_engine.containers) == 1  # 768 MiB held; another 768 would go over 1 GiB
        assert value(scrape(api), "orch_runs_waiting_for_memory") == 2
        status = {i: api.get(f"/v1/runs/{i}").json()["status"] for i in ids}
        assert sorted(status.values()) == ["running", "starting", "starting"]  # the others wait
        running = next(i for i in ids if status[i] == "running")
        waiting, cancelled = (i for i in ids if i != running)

        assert api.post(f"/v1/runs/{cancelled}/cancel").status_code == 200
        workers[ids.index(cancelled)].join(15)
        last = api.get(f"/v1/runs/{cancelled}").json()
        assert (last["status"], last["reason"]) == ("cancelled", "cancelled while it waited for memory")
        assert len(fake_engine.containers) == 1
    finally:
        release.set()
        for w in workers:
            w.join(15)
    first, second = (api.get(f"/v1/runs/{i}").json() for i in (running, waiting))
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    assert len(fake_engine.containers) == 2
    first_log, second_log = (api.get(f"/v1/runs/{i}/logs").json()["log"] for i in (running, waiting))
    assert "waiting for memory" not in first_log
    assert (
        "→ waiting for memory: other runs and sandboxes hold 768 MiB of the 1 GiB that sandboxes may "
        "have at once (run_memory), and this one asks for 768 MiB"
    ) in second_log
    assert (platform.run_memory.used, platform.run_memory.waiting) == (0, 0)


def test_runs_within_the_budget_do_not_wait(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    _agent_asking(api, platform, tmp_path, "small", "512Mi")
    release = threading.Event()
    fake_engine.behaviour = lambda spec, out, err: (release.wait(30), ContainerExit(0))[1]
    ids = [api.post("/v1/runs", json={"agent": "small"}).json()["id"] for _ in range(2)]
    workers = [_executing(platform) for _ in ids]
    try:
        _until(lambda: len(fake_engine.containers) == 2, "both in their sandboxes at once")
        assert platform.run_memory.used == 1024 * MiB
    finally:
        release.set()
        for w in workers:
            w.join(15)
    assert all("waiting for memory" not in api.get(f"/v1/runs/{i}/logs").json()["log"] for i in ids)


def test_the_runs_memory_budget_and_what_runs_hold_of_it(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    _agent_asking(api, platform, tmp_path, "big", "768Mi")
    samples = scrape(api)
    assert value(samples, "orch_run_memory_bytes", state="budget") == 1024 * MiB
    assert value(samples, "orch_run_memory_bytes", state="held") == 0
    assert value(samples, "orch_runs_waiting_for_memory") == 0
    seen: list[tuple[float, float]] = []

    def looks(
        spec: ContainerSpec, out: Callable[[bytes], None], err: Callable[[bytes], None]
    ) -> ContainerExit:
        during = scrape(api)  # from inside the run's sandbox: its limit is held
        seen.append(
            (
                value(during, "orch_run_memory_bytes", state="held"),
                value(during, "orch_runs_waiting_for_memory"),
            )
        )
        return ContainerExit(0)

    fake_engine.behaviour = looks
    api.post("/v1/runs", json={"agent": "big"})
    assert drain_runs(platform) == 1
    assert seen == [(768 * MiB, 0)]
    assert value(scrape(api), "orch_run_memory_bytes", state="held") == 0


# ---- sandboxes on demand hold their memory in the same budget ---------------------------------


@pytest.fixture
def holder(platform: Platform) -> FakeHolder:
    fake = FakeHolder()
    platform.held.holders.update({Isolation.RUNC: fake, Isolation.GVISOR: fake})
    platform.run_memory = Budget(1024 * MiB)
    return fake


def _sandbox(api: httpx.Client, memory: str) -> str:
    resp = api.post("/v1/sandboxes", json={"memory": memory})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _sandbox_ids(platform: Platform) -> list[str]:
    with platform.store.session() as s:
        return list(s.scalars(select(SandboxRow.id)))


def test_a_sandbox_holds_its_memory_until_removed_and_a_run_waits_for_it(
    api: httpx.Client, platform: Platform, holder: FakeHolder, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    sandbox = _sandbox(api, "768Mi")
    assert platform.run_memory.used == 768 * MiB
    assert value(scrape(api), "orch_run_memory_bytes", state="sandboxes") == 768 * MiB
    agent = {"main.py": "print('hi')\n", "orch.yaml": "name: small\nresources: {memory: 512Mi}\n"}
    assert publish(api, "small", bundle(tmp_path, agent)).status_code == 201
    run_id = api.post("/v1/runs", json={"agent": "small"}).json()["id"]
    worker = _executing(platform)
    try:
        _until(lambda: platform.run_memory.waiting == 1, "the run waits")
        time.sleep(0.1)
        assert fake_engine.containers == []  # 768 MiB held by the sandbox; 512 more would go over
    finally:
        assert api.delete(f"/v1/sandboxes/{sandbox}").status_code == 204
        worker.join(15)
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
    assert (
        "→ waiting for memory: other runs and sandboxes hold 768 MiB of the 1 GiB that sandboxes may "
        "have at once (run_memory), and this one asks for 512 MiB"
    ) in api.get(f"/v1/runs/{run_id}/logs").json()["log"]
    assert (platform.run_memory.used, platform.run_memory.held_by_sandboxes) == (0, 0)


def test_a_create_that_finds_no_memory_in_time_is_refused_with_503_and_changes_nothing(
    api: httpx.Client, platform: Platform, holder: FakeHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandboxes, "MEMORY_WAIT", 0.3)
    first = _sandbox(api, "768Mi")
    resp = api.post("/v1/sandboxes", json={"memory": "512Mi"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.json() == {
        "error": "capacity_reached",
        "message": "The server's sandboxes hold 768 MiB of the 1 GiB of memory they may have at once "
        "(run_memory), and this sandbox asks for 512 MiB; none was given back within 0.3 s.",
        "fix": "Try again when runs or sandboxes have ended (`orch sandbox rm ID` removes one you no "
        "longer need), or ask for less memory (--memory; `memory` in the API and the Python client).",
    }
    assert _sandbox_ids(platform) == [first] and len(holder.opened) == 1
    assert (platform.run_memory.used, platform.run_memory.waiting) == (768 * MiB, 0)
    _sandbox(api, "256Mi")  # what fits goes in at once
    assert platform.run_memory.used == 1024 * MiB


def test_a_waiting_create_goes_in_when_a_sandbox_is_removed(
    api: httpx.Client, platform: Platform, holder: FakeHolder
) -> None:
    first = _sandbox(api, "768Mi")
    answers: list[httpx.Response] = []
    create = threading.Thread(
        target=lambda: answers.append(api.post("/v1/sandboxes", json={"memory": "512Mi"}))
    )
    create.start()
    _until(lambda: platform.run_memory.waiting == 1, "the create waits")
    assert api.delete(f"/v1/sandboxes/{first}").status_code == 204
    create.join(15)
    assert answers[0].status_code == 201, answers[0].text
    assert platform.run_memory.used == 512 * MiB


def test_a_sandbox_larger_than_the_whole_budget_is_refused(
    api: httpx.Client, platform: Platform, holder: FakeHolder
) -> None:
    resp = api.post("/v1/sandboxes", json={"memory": "2Gi"})
    assert resp.status_code == 400
    assert resp.json()["message"] == (
        "This sandbox asks for 2 GiB of memory, more than the 1 GiB that all sandboxes on this server "
        "may have at once (run_memory)."
    )
    assert resp.json()["fix"] == f"Ask for at most 1 GiB ({sandboxes.MEMORY_OPTION})."
    assert "--memory" in resp.json()["fix"] and "`memory` in the API" in resp.json()["fix"]
    assert _sandbox_ids(platform) == [] and holder.opened == [] and platform.run_memory.used == 0


def test_every_way_a_sandbox_ends_gives_its_memory_back(
    api: httpx.Client, platform: Platform, holder: FakeHolder
) -> None:
    holder.fail = EngineError("The OCI runtime runc is not installed.", "Install it.")
    assert api.post("/v1/sandboxes", json={"memory": "512Mi"}).status_code == 502
    assert platform.run_memory.used == 0
    holder.fail = None
    idle = _sandbox(api, "512Mi")
    with platform.store.session() as s:
        past = utcnow() - timedelta(seconds=DEFAULT_TIMEOUT + 1)
        s.execute(update(SandboxRow).where(SandboxRow.id == idle).values(last_used_at=past))
    assert sandboxes.reap(platform) == [idle] and platform.run_memory.used == 0
    _sandbox(api, "512Mi")
    _sandbox(api, "512Mi")
    assert platform.run_memory.used == 1024 * MiB
    assert sandboxes.close_all(platform, "the server stopped") == 2
    assert platform.run_memory.used == 0


def test_a_stopping_server_starts_no_waiting_run_and_queues_it_again(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """Found by a tester: the stop ended the running run's sandbox, which gave its memory back,
    and the run waiting for it started its sandbox in the middle of the stop (then was failed as
    running when the server went). It is queued again, never started, for the next start."""
    _agent_asking(api, platform, tmp_path, "big", "768Mi")
    release = threading.Event()
    fake_engine.behaviour = lambda spec, out, err: (release.wait(30), ContainerExit(137))[1]
    first, second = (api.post("/v1/runs", json={"agent": "big"}).json()["id"] for _ in range(2))
    workers = [_executing(platform), _executing(platform)]
    try:
        _until(lambda: len(fake_engine.containers) == 1 and platform.run_memory.waiting == 1, "one waiting")
        platform.stopping.set()  # the stop: then it ends the running sandbox
        release.set()
        for w in workers:
            w.join(15)
        assert run_worker.claim(platform) is None  # a stopping server takes no run, not that one again
    finally:
        release.set()
        platform.stopping.clear()
    assert len(fake_engine.containers) == 1  # the waiting run's sandbox never started
    ran, waited = (api.get(f"/v1/runs/{i}").json() for i in (first, second))
    if ran["status"] == "queued":  # which of the two got the memory first is the workers' race
        ran, waited = waited, ran
    assert ran["status"] == "failed" and waited["status"] == "queued"
    log = api.get(f"/v1/runs/{waited['id']}/logs").json()["log"]
    assert log.endswith("The server stopped while it waited for memory; it was queued again.\n")
    assert log.count("queued again") == 1
    assert (platform.run_memory.used, platform.run_memory.waiting) == (0, 0)
