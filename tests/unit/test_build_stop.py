"""Builds and the server's stop and start, on the fake engine: a stopping server stops its running
builds (they went on, unsupervised, until the next start), and a start says when the disk
reserve is more than the disk."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from orch.engine.fake import FakeEngine
from orch.models import BuildStatus
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.workers import build_queue, builds
from tests.conftest import build_log
from tests.unit.test_builds import DOCKERFILE, _build


def test_a_stopping_server_stops_its_running_build_and_queues_it_again(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    fake_engine.gate.clear()  # the build holds at its first step until stopped
    workers = build_queue(platform, poll=0.05)
    workers.start()
    try:
        env = envs.create(platform, workspace[0], "long", DOCKERFILE)
        build_id = env.build_id or ""
        for _ in range(500):
            if fake_engine.builds and _build(platform, build_id).step >= 1:
                break
            threading.Event().wait(0.02)
        workers.stop(timeout=10)
        assert not any(t.is_alive() for t in workers._threads), "the build worker was still busy"
    finally:
        fake_engine.gate.set()
        workers.stop()
    assert fake_engine.stopped == [fake_engine.builds[0].tag]
    row = _build(platform, build_id)
    assert row.status == BuildStatus.QUEUED and row.worker_pid is None
    assert "The server stopped during this build; it was queued again." in build_log(platform, build_id)


def test_a_build_gets_the_steps_limits(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    envs.create(platform, workspace[0], "one", DOCKERFILE)
    builds.run(platform, builds.claim(platform) or "")
    (request,) = fake_engine.builds
    assert request.memory == platform.config.build_memory and request.pids == platform.config.build_pids
    assert request.memory == 4 * 2**30 and request.pids == 1024  # the defaults


def test_a_reserve_larger_than_the_disk_is_said_at_start(
    platform: Platform,
    fake_engine: FakeEngine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ORCH_BUILD_DISK_RESERVE=99Ti started without a word, and every build then failed."""
    monkeypatch.setattr(
        fake_engine, "storage_disk", lambda: (Path("/var/lib/containers/storage"), 252 * 2**30)
    )
    monkeypatch.setattr(platform, "config", platform.config.with_values(build_disk_reserve=99 * 2**40))
    with caplog.at_level(logging.WARNING, logger="orch.workers.builds"):
        builds.recover(platform)
    assert (
        "ORCH_BUILD_DISK_RESERVE is 99 TiB, more than the 252 GiB of the whole file system that holds "
        "the container storage (/var/lib/containers/storage): every build will fail before its first step."
    ) in caplog.text
    caplog.clear()
    monkeypatch.setattr(platform, "config", platform.config.with_values(build_disk_reserve=2 * 2**30))
    with caplog.at_level(logging.WARNING, logger="orch.workers.builds"):
        builds.recover(platform)
    assert "ORCH_BUILD_DISK_RESERVE" not in caplog.text
