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


def _building(platform: Platform, fake_engine: FakeEngine, env_id: str) -> threading.Thread:
    """Start the queued build in a worker thread, held at its first step (the gate cleared)."""
    fake_engine.gate.clear()
    build_id = builds.claim(platform)
    t = threading.Thread(target=builds.run, args=(platform, build_id))
    t.start()
    for _ in range(200):
        if fake_engine.builds and _build(platform, build_id or "").step >= 1:
            break
        threading.Event().wait(0.02)
    return t


def test_deleting_an_environment_stops_its_build(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, caplog
) -> None:
    """Before, the build went on to its end (up to ORCH_BUILD_TIMEOUT), holding the build worker,
    then crashed on its deleted row and left its image named by nothing."""
    env = envs.create(platform, workspace[0], "doomed", DOCKERFILE)
    t = _building(platform, fake_engine, env.id)
    try:
        envs.delete(platform, workspace[0], "doomed")
        t.join(10)
        assert not t.is_alive(), "the build went on after its environment was deleted"
    finally:
        fake_engine.gate.set()
        t.join()
    assert fake_engine.stopped == [fake_engine.builds[0].tag]
    assert not fake_engine.images(platform.labels)  # no image of it
    assert "crashed" not in caplog.text
    # The worker is free: the next build runs.
    other = envs.create(platform, workspace[0], "next", DOCKERFILE + "RUN echo next\n")
    assert drain(platform) == 1
    assert envs.show(platform, workspace[0], other.id).status == "ready"


def test_a_deleted_builds_output_does_not_stop_the_others(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    """A line a build printed after its environment (and its rows) went failed every flush of the
    platform's output, every writer's (runs' too), for good."""
    from orch.services import build_output, output_store

    doomed = envs.create(platform, workspace[0], "doomed", DOCKERFILE)
    kept = envs.create(platform, workspace[0], "kept", DOCKERFILE + "RUN echo kept\n")
    late = build_output.BuildOutput(platform, doomed.build_id or "")
    alive = build_output.BuildOutput(platform, kept.build_id or "")
    envs.delete(platform, workspace[0], "doomed")
    late.line("printed after the delete")
    alive.line("the other build's line")
    output_store.flusher(platform).store_waiting()  # raised IntegrityError, forever
    assert "the other build's line" in build_log(platform, kept.build_id or "")


def test_a_failure_that_is_no_steps_says_its_own_fix(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, monkeypatch
) -> None:
    """A timeout (or any failure other than a step's command) named the running step as the
    failed one, and the CLI told to fix it."""
    from orch.errors import BuildFailed

    real = fake_engine.build

    def slow(request, on_output, on_start=None, should_stop=None):  # type: ignore[no-untyped-def]
        on_output("STEP 1/3: FROM base")
        on_output("STEP 2/3: RUN echo one")
        raise BuildFailed(
            "The build was stopped after 5 s.",
            "Make the Dockerfile's steps faster, or raise ORCH_BUILD_TIMEOUT.",
            tail=[],
        )

    monkeypatch.setattr(fake_engine, "build", slow)
    env = envs.create(platform, workspace[0], "slow", DOCKERFILE)
    drain(platform)
    row = _build(platform, env.build_id or "")
    assert row.status == BuildStatus.FAILED and row.failed_step is None
    assert row.error == (
        "The build was stopped after 5 s, during step 2/3: RUN echo one. "
        "Make the Dockerfile's steps faster, or raise ORCH_BUILD_TIMEOUT."
    )
    # A step whose command failed is the failed step, as before.
    monkeypatch.setattr(fake_engine, "build", real)
    broken = envs.create(platform, workspace[0], "broken", DOCKERFILE + "RUN exit 1\n")
    drain(platform)
    row = _build(platform, broken.build_id or "")
    assert (
        row.failed_step == "step 4/4: RUN exit 1" and row.error == "Step 4/4: RUN exit 1 failed (exit code 1)"
    )


def test_a_build_stopped_by_two_server_stops_says_how_to_build_again(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    env = envs.create(platform, workspace[0], "twice", DOCKERFILE)
    for _ in range(2):
        assert builds.claim(platform) == env.build_id
        builds.recover(platform)
    row = _build(platform, env.build_id or "")
    assert row.status == BuildStatus.FAILED and row.failed_step is None
    assert row.error == (
        "The server stopped during this build 2 times; it was not tried again. "
        "Build it again with `orch env build twice`."
    )


def test_an_image_larger_than_the_bound_fails_its_build_and_goes(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, monkeypatch
) -> None:
    import dataclasses

    platform.config = platform.config.with_values(build_max_size=64 * 2**20)
    real = fake_engine.build

    def big(request, on_output, on_start=None, should_stop=None):  # type: ignore[no-untyped-def]
        info = dataclasses.replace(real(request, on_output, on_start, should_stop), size=5 * 2**30)
        fake_engine.images_by_tag[request.tag] = info
        return info

    monkeypatch.setattr(fake_engine, "build", big)
    env = envs.create(platform, workspace[0], "big", DOCKERFILE)
    drain(platform)
    row = _build(platform, env.build_id or "")
    assert row.status == BuildStatus.FAILED and row.failed_step is None
    assert (row.error or "").startswith(
        "The image is 5 GiB, more than the 64 MiB that ORCH_BUILD_MAX_SIZE allows, so it was not kept."
    )
    assert fake_engine.inspect_image(fake_engine.builds[0].tag) is None
    assert envs.show(platform, workspace[0], "big").image is None
