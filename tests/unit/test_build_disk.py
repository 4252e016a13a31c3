"""A running build's writes, bounded (engine/build_disk.py): the watchdog's decisions on fakes,
how it finds a build's working containers in a fake container storage, and the worker's use."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from orch.engine import build_disk
from orch.engine.build_disk import Guard, Stop, Storage
from orch.engine.fake import FakeEngine
from orch.models import BuildStatus
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store.schema import BuildRow
from tests.conftest import drain

MiB = 2**20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Probe:
    """A measure that counts its calls, and moves the clock by what it takes."""

    def __init__(self, value: int, clock: Clock | None = None, takes: float = 0.0) -> None:
        self.value, self.calls, self.clock, self.takes = value, 0, clock, takes

    def __call__(self) -> int:
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.takes
        return self.value


def now(walk: Callable[[], None]) -> None:
    """A walk run at once, in the poll (the server's runs on a thread of its own)."""
    walk()


def test_a_build_past_its_bound_is_stopped_with_the_bound_and_the_fix() -> None:
    written = Probe(10 * MiB)
    guard = Guard(50 * MiB, 0, written, Probe(10**12), clock=Clock(), start=now)
    assert guard.check() is None
    written.value = 50 * MiB
    assert guard.check() is None  # at the bound is within it
    written.value = 51 * MiB
    stop = guard.check()
    assert stop == Stop(50 * MiB, 51 * MiB)
    error = stop.error(["tail"])
    assert error.message == (
        "The build was stopped: its steps had written 51 MiB, more than the 50 MiB that "
        "ORCH_BUILD_MAX_SIZE allows"
    )
    assert "raise ORCH_BUILD_MAX_SIZE" in error.fix and error.details["tail"] == ["tail"]
    assert "exit_code" not in error.details and not error.details.get("stopped")


def test_a_disk_below_the_reserve_stops_the_build_whatever_it_wrote() -> None:
    free = Probe(3 * 2**30)
    guard = Guard(
        50 * MiB, 2 * 2**30, Probe(0), free, where="/var/lib/containers/storage", clock=Clock(), start=now
    )
    assert guard.check() is None
    free.value = 2**30
    stop = guard.check()
    assert stop == Stop(2 * 2**30, 2**30, reserve=True, where="/var/lib/containers/storage")
    error = stop.error([])
    assert error.message.startswith(
        "The build was stopped: the disk that holds the container storage (/var/lib/containers/storage) "
        "had 1 GiB free, less than the 2 GiB that ORCH_BUILD_DISK_RESERVE keeps free"
    )
    assert "ORCH_BUILD_DISK_RESERVE" in error.fix


def test_no_bound_measures_nothing() -> None:
    written, free = Probe(10**15), Probe(0)
    guard = Guard(0, 0, written, free, clock=Clock(), start=now)
    assert [guard.check() for _ in range(3)] == [None, None, None]
    assert written.calls == free.calls == 0


def test_the_walk_takes_a_tenth_of_the_time_at_most_the_free_space_every_poll() -> None:
    """A walk of the writable layer costs what its tree holds: one that took 2 s is not started
    again before 20 s have passed, while the free space (statvfs) is asked at every poll."""
    clock = Clock()
    written, free = Probe(MiB, clock, takes=2.0), Probe(10**12)
    guard = Guard(50 * MiB, MiB, written, free, clock=clock, start=now)
    polls = 0
    while clock.now < 60:
        guard.check()
        polls += 1
        clock.now += 1.0  # the watcher's poll
    assert written.calls == 3  # at 0 s, 21 s and 42 s (each walk 2 s, then 20 s apart)
    assert free.calls == polls
    written.takes, written.value = 0.001, 60 * MiB
    clock.now += 20
    assert guard.check() == Stop(50 * MiB, 60 * MiB)


def test_a_long_walk_holds_no_poll_and_its_result_is_seen_at_the_next() -> None:
    """A walk of a huge upper directory held the watcher for as long as it took, and with it the
    build's timeout and a stop asked for. The walk now runs on a thread of its own: a poll
    during it answers at once, and the poll after it ends sees what it measured."""
    release, walking = threading.Event(), threading.Event()

    def written() -> int:
        walking.set()
        release.wait(10)
        return 60 * MiB

    guard = Guard(50 * MiB, 0, written, Probe(10**12))
    began = time.monotonic()
    assert guard.check() is None  # the walk started, and runs on
    assert walking.wait(5)
    assert [guard.check() for _ in range(3)] == [None] * 3  # no second walk meanwhile
    assert time.monotonic() - began < 1
    release.set()
    for _ in range(100):
        if stop := guard.check():
            break
        time.sleep(0.05)
    assert stop == Stop(50 * MiB, 60 * MiB)


def test_a_walk_that_fails_is_tried_again_and_stops_nothing() -> None:
    calls = []

    def written() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("the layer went under the walk")
        return 60 * MiB

    guard = Guard(50 * MiB, 0, written, Probe(10**12), clock=Clock(), start=now)
    assert guard.check() is None
    assert guard.check() == Stop(50 * MiB, 60 * MiB)


def _container(storage: Path, cid: str, layer: str, args: dict[str, str] | None) -> None:
    userdata = storage / "overlay-containers" / cid / "userdata"
    userdata.mkdir(parents=True)
    if args is not None:
        (userdata / "buildah.json").write_text(json.dumps({"Args": args}))
    (storage / "overlay" / layer / "diff").mkdir(parents=True)


def test_a_builds_working_containers_are_found_by_its_owner_argument(tmp_path: Path) -> None:
    _container(tmp_path, "c1", "l1", {"ORCH_BUILD_OWNER": "inst/mine"})
    _container(tmp_path, "c2", "l2", {"ORCH_BUILD_OWNER": "inst/other"})
    _container(tmp_path, "c3", "l3", None)  # a sandbox's, or a build's whose state is not written yet
    listed = [{"id": c, "layer": f"l{c[1]}"} for c in ("c1", "c2", "c3")]
    (tmp_path / "overlay-containers" / "containers.json").write_text(json.dumps(listed))
    storage, skip = Storage(tmp_path, "overlay"), set[str]()
    assert storage.working_layers("ORCH_BUILD_OWNER", "inst/mine", skip) == [tmp_path / "overlay/l1/diff"]
    assert skip == {"c2"}  # another build's, for good; c3 is read again at the next poll
    (tmp_path / "overlay-containers/c3/userdata/buildah.json").write_text(
        json.dumps({"Args": {"ORCH_BUILD_OWNER": "inst/mine"}})
    )
    assert storage.working_layers("ORCH_BUILD_OWNER", "inst/mine", skip) == [
        tmp_path / "overlay/l1/diff",
        tmp_path / "overlay/l3/diff",
    ]
    assert Storage(tmp_path / "none", "overlay").working_layers("ORCH_BUILD_OWNER", "inst/mine") == []


def test_disk_usage_counts_blocks_each_inode_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data").write_bytes(os.urandom(MiB))
    os.link(tmp_path / "d" / "data", tmp_path / "d" / "again")
    with (tmp_path / "sparse").open("wb") as f:
        f.truncate(100 * MiB)  # a hole takes no disk
    (tmp_path / "link").symlink_to("/usr")
    used = build_disk.disk_usage(tmp_path)
    assert MiB <= used < 2 * MiB


def test_the_worker_bounds_the_build_and_records_the_disk_stop(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, monkeypatch
) -> None:
    platform.config = platform.config.with_values(build_max_size=64 * MiB, build_disk_reserve=3 * 2**30)

    def full(request, on_output, on_start=None, should_stop=None):  # type: ignore[no-untyped-def]
        fake_engine.builds.append(request)
        on_output("STEP 2/3: RUN fallocate -l 70G /x")
        raise Stop(request.max_size, 70 * 2**30).error(["STEP 2/3: RUN fallocate -l 70G /x"])

    monkeypatch.setattr(fake_engine, "build", full)
    env = envs.create(
        platform, workspace[0], "full", "FROM e2bdev/code-interpreter:latest\nRUN fallocate -l 70G /x\n"
    )
    drain(platform)
    (request,) = fake_engine.builds
    assert (request.max_size, request.disk_reserve) == (64 * MiB, 3 * 2**30)
    with platform.store.session() as s:
        row = s.get(BuildRow, env.build_id)
        assert row is not None
        assert row.status == BuildStatus.FAILED and row.failed_step is None
        assert row.error == (
            "The build was stopped: its steps had written 70 GiB, more than the 64 MiB that "
            "ORCH_BUILD_MAX_SIZE allows, during step 2/2: RUN fallocate -l 70G /x. Make the steps "
            "write less (install only what runs need, and remove downloads and caches in the step "
            "that made them), or ask the server's operator to raise ORCH_BUILD_MAX_SIZE."
        )
