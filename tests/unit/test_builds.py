"""The durable build queue on the fake engine: claim, run, recover."""

from __future__ import annotations

import os
import threading

from orch.engine.fake import FakeEngine
from orch.models import BuildStatus
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store.schema import BuildRow
from orch.workers import build_queue, builds
from tests.conftest import build_log, drain

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo one\nRUN echo two\n"


def _build(platform: Platform, build_id: str) -> BuildRow:
    with platform.store.session() as s:
        row = s.get(BuildRow, build_id)
        assert row is not None
        return row


def test_claim_is_exclusive(platform: Platform, workspace: tuple[str, str]) -> None:
    env = envs.create(platform, workspace[0], "one", DOCKERFILE)
    claimed: list[str | None] = []
    threads = [threading.Thread(target=lambda: claimed.append(builds.claim(platform))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c for c in claimed if c] == [env.build_id]
    assert _build(platform, env.build_id or "").status == BuildStatus.BUILDING


def test_recover_requeues_then_fails(platform: Platform, workspace: tuple[str, str]) -> None:
    env = envs.create(platform, workspace[0], "one", DOCKERFILE)
    build_id = env.build_id or ""
    assert builds.claim(platform) == build_id
    assert builds.recover(platform) == [build_id]  # as if the server had been killed
    row = _build(platform, build_id)
    assert row.status == BuildStatus.QUEUED and row.attempts == 1
    assert builds.claim(platform) == build_id
    builds._set_pid(platform, build_id, os.getpid())  # not a podman build: recover leaves it alone
    builds.recover(platform)
    row = _build(platform, build_id)
    assert row.status == BuildStatus.FAILED
    assert "stopped during this build 2 times" in (row.error or "")
    assert row.worker_pid is None and row.finished_at is not None  # a failed build has no worker
    log = build_log(platform, build_id)
    assert "queued again" in log


def test_worker_threads_drain_the_queue(platform: Platform, workspace: tuple[str, str]) -> None:
    workers = build_queue(platform, count=2, poll=0.05)
    workers.start()
    try:
        created = [
            envs.create(platform, workspace[0], f"e{i}", DOCKERFILE + f"RUN echo {i}\n") for i in range(3)
        ]
        for _ in range(200):
            statuses = {envs.show(platform, workspace[0], e.id).status for e in created}
            if statuses == {"ready"}:
                break
            threading.Event().wait(0.05)
        assert statuses == {"ready"}
    finally:
        workers.stop()


def test_engine_crash_fails_the_build_not_the_worker(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, monkeypatch
) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("podman vanished")

    monkeypatch.setattr(fake_engine, "build", boom)
    env = envs.create(platform, workspace[0], "one", DOCKERFILE)
    assert drain(platform) == 1
    row = _build(platform, env.build_id or "")
    assert row.status == BuildStatus.FAILED and "podman vanished" in (row.error or "")


def test_progress_is_recorded(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    fake_engine.gate.clear()
    env = envs.create(platform, workspace[0], "one", DOCKERFILE)
    build_id = builds.claim(platform)
    t = threading.Thread(target=builds.run, args=(platform, build_id))
    t.start()
    try:
        for _ in range(200):
            row = _build(platform, env.build_id or "")
            if row.step >= 1:
                break
            threading.Event().wait(0.02)
        assert row.step == 1 and row.total_steps == 3 and row.step_text.startswith("FROM ")
    finally:
        fake_engine.gate.set()
        t.join()
    assert _build(platform, env.build_id or "").status == BuildStatus.READY
