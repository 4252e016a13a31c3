"""Runs wait for memory: the sum of their sandboxes' memory limits stays within `run_memory`
(services/run_memory.py), in the order the runs came; a cancel ends a waiting run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from orch.services.run_memory import MemoryBudget
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
    platform.run_memory = MemoryBudget(1024 * MiB)
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
        "→ waiting for memory: other runs hold 768 MiB of the 1 GiB that runs may have at once "
        "(run_memory), and this one asks for 768 MiB"
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
