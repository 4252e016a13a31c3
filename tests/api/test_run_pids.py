"""Runs wait for processes: the sum of their sandboxes' process limits, of their dependency
installs' and of the sandboxes on demand held open, stays within `run_pids`
(services/run_memory.py), as memory does within `run_memory`. Every sandbox runs as the host's
uid 1000, whose processes the kernel counts together against one RLIMIT_NPROC: a budget below it
keeps one sandbox's processes from making another's fork fail (found by a tester: one run with
`pids: 4096` made every other run's fork fail)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from orch import config
from orch.engine.base import ContainerExit
from orch.engine.fake import FakeEngine
from orch.sandbox import oci
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.services import run_memory, sandboxes
from orch.services.platform import Platform
from orch.services.run_memory import Budget
from orch.store.schema import SandboxRow
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_metrics import scrape, value
from tests.api.test_run_memory import _executing, _until


def test_a_run_over_the_processes_budget_waits_for_one_to_end_and_a_cancel_ends_a_waiting_one(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    platform.run_pids = Budget(3000)
    agent = {"main.py": "print('hi')\n", "orch.yaml": "name: many\nresources: {pids: 2048}\n"}
    assert publish(api, "many", bundle(tmp_path, agent)).status_code == 201
    release = threading.Event()
    fake_engine.behaviour = lambda spec, out, err: (release.wait(30), ContainerExit(0))[1]
    ids = [api.post("/v1/runs", json={"agent": "many"}).json()["id"] for _ in range(3)]
    workers = [_executing(platform) for _ in ids]
    try:
        _until(lambda: len(fake_engine.containers) == 1 and platform.run_pids.waiting == 2, "two waiting")
        time.sleep(0.2)
        assert len(fake_engine.containers) == 1  # 2,048 held; another 2,048 would go over 3,000
        samples = scrape(api)
        assert value(samples, "orch_runs_waiting_for_processes") == 2
        assert value(samples, "orch_run_pids", state="budget") == 3000
        assert value(samples, "orch_run_pids", state="held") == 2048
        status = {i: api.get(f"/v1/runs/{i}").json()["status"] for i in ids}
        assert sorted(status.values()) == ["running", "starting", "starting"]
        running = next(i for i in ids if status[i] == "running")
        waiting, cancelled = (i for i in ids if i != running)
        assert api.post(f"/v1/runs/{cancelled}/cancel").status_code == 200
        workers[ids.index(cancelled)].join(15)
        last = api.get(f"/v1/runs/{cancelled}").json()
        assert (last["status"], last["reason"]) == ("cancelled", "cancelled while it waited for processes")
        # The running one's memory and the waiting one's (held while it waits for processes);
        # the cancelled one gave its own back.
        assert platform.run_memory.used == 2 * 512 * 2**20
    finally:
        release.set()
        for w in workers:
            w.join(15)
    assert api.get(f"/v1/runs/{waiting}").json()["status"] == "succeeded"
    assert (
        "→ waiting for processes: other runs and sandboxes may have 2,048 of the 3,000 processes "
        "that sandboxes may have at once (run_pids), and this one asks for 2,048"
    ) in api.get(f"/v1/runs/{waiting}/logs").json()["log"]
    assert (platform.run_pids.used, platform.run_pids.waiting) == (0, 0)
    assert (platform.run_memory.used, platform.run_memory.waiting) == (0, 0)


@pytest.fixture
def holder(platform: Platform) -> FakeHolder:
    fake = FakeHolder()
    platform.held.holders.update({Isolation.RUNC: fake, Isolation.GVISOR: fake})
    return fake


def test_a_sandbox_holds_its_process_limit_until_removed_and_one_that_finds_none_is_refused(
    api: httpx.Client, platform: Platform, holder: FakeHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandboxes, "MEMORY_WAIT", 0.3)
    platform.run_pids = Budget(300)
    first = api.post("/v1/sandboxes", json={})
    assert first.status_code == 201, first.text
    assert platform.run_pids.used == 256  # a sandbox's process limit
    assert value(scrape(api), "orch_run_pids", state="sandboxes") == 256
    memory_before = platform.run_memory.used

    refused = api.post("/v1/sandboxes", json={})
    assert refused.status_code == 503
    body = refused.json()
    assert body["message"] == (
        "The server's sandboxes may have 256 of the 300 processes they may have at once (run_pids), "
        "and this sandbox's limit is 256; none was given back within 0.3 s."
    )
    assert "ask for less memory" not in body["fix"]
    # Nothing changed: no row, no memory held for it.
    with platform.store.session() as s:
        assert list(s.scalars(select(SandboxRow.id))) == [first.json()["id"]]
    assert platform.run_memory.used == memory_before

    assert api.delete(f"/v1/sandboxes/{first.json()['id']}").status_code == 204
    assert (platform.run_pids.used, platform.run_memory.used) == (0, 0)
    assert api.post("/v1/sandboxes", json={}).status_code == 201


def test_the_default_budget_is_half_of_the_sandboxes_nproc_or_of_the_pid_space(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oci, "sandbox_nproc", lambda: 32768)
    monkeypatch.setattr(config, "pid_space", lambda: 4_194_304)
    assert config.run_pids_default() == 16384
    monkeypatch.setattr(config, "pid_space", lambda: 10_000)
    assert config.run_pids_default() == 5000
    assert run_memory.above_nproc(16384, 32768) is None
    said = run_memory.above_nproc(40000, 32768)
    assert said is not None and said.startswith("ORCH_RUN_PIDS is 40,000, not below the 32,768 processes")


def test_the_machines_sandboxes_get_an_nproc_above_the_budget() -> None:
    """What scripts/setup writes (containers.conf's nproc, which the launcher reads): far above
    what one sandbox may have (4,096), and twice the default budget or more."""
    assert oci.sandbox_nproc() >= 2 * config.run_pids_default()
    assert oci.sandbox_nproc() >= 4 * 4096


def test_a_sandbox_larger_than_the_whole_processes_budget_is_refused_at_once(
    api: httpx.Client, platform: Platform, holder: FakeHolder
) -> None:
    platform.run_pids = Budget(100)
    refused = api.post("/v1/sandboxes", json={})
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        "A sandbox may have 256 processes, more than the 100 that all sandboxes on this server "
        "may have at once (run_pids)."
    )
    with platform.store.session() as s:
        assert list(s.scalars(select(SandboxRow.id))) == []
    assert platform.run_pids.used == 0


def test_a_refused_create_says_what_waits_ahead_of_it(
    api: httpx.Client, platform: Platform, holder: FakeHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: '256 of the 700 processes, and this sandbox's limit is 256' read as if
    it fitted; a run waiting for 600 was ahead of it in the line."""
    monkeypatch.setattr(sandboxes, "MEMORY_WAIT", 0.3)
    platform.run_pids = budget = Budget(700)
    assert budget.hold("held", 256, lambda: False, lambda _in_use: None)
    release = threading.Event()

    def waits() -> None:
        with budget.reserved(600, release.is_set, lambda _in_use: None):
            pass

    waiting = threading.Thread(target=waits)
    waiting.start()
    try:
        deadline = time.monotonic() + 10
        while budget.waiting != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = api.post("/v1/sandboxes", json={})
        assert refused.status_code == 503
        assert refused.json()["message"] == (
            "The server's sandboxes may have 256 of the 700 processes they may have at once (run_pids), "
            "and this sandbox's limit is 256, behind 1 waiting for its own; none was given back within 0.3 s."
        )
    finally:
        release.set()
        waiting.join(10)
        budget.release("held")
