"""The memory and process limits of builds' RUN steps on real Podman (engine/build_limits.py):
a step runs the workspace's own commands as root, and had neither (a found defect: its cgroup
had `pids.max` max and no memory limit)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.builder import base_images
from orch.engine import PodmanEngine, build_limits
from orch.engine.base import BuildRequest
from orch.engine.podman_run import CGROUP_ROOT
from orch.errors import BuildFailed
from tests.integration.test_engine import running, working_containers

pytestmark = pytest.mark.integration

OWNER = "enginetest-limits"
MEMORY = 128 * 2**20
PIDS = 64


@pytest.fixture
def engine() -> Iterator[PodmanEngine]:
    engine = PodmanEngine()
    engine.remove_build_leftovers(OWNER)  # an earlier run's, killed half-way
    yield engine
    engine.remove_build_leftovers(OWNER)
    for tag in ("fits", "memory", "tmpfs", "cache", "pids", "stopped"):
        engine.remove_image(f"localhost/orch-enginetest/limits-{tag}:1")


def request(tag: str, step: str) -> BuildRequest:
    return BuildRequest(
        containerfile=f"FROM {base_images.image_tag('python')}\nRUN {step}\n",
        tag=f"localhost/orch-enginetest/limits-{tag}:1",
        no_cache=True,
        owner=OWNER,
        timeout=300,
        memory=MEMORY,
        pids=PIDS,
    )


def parents_left() -> list[Path]:
    """The build parent cgroups of OWNER's builds, in any hierarchy."""
    return list(CGROUP_ROOT.glob(f"*/orch_build-{OWNER}-*"))


def test_a_steps_cgroup_has_the_limits_and_a_build_within_them_succeeds(engine: PodmanEngine) -> None:
    """The step sees its memory limit; from the host, its processes' cgroup lies under the
    build's parent, whose pids.max is the process limit. Nothing of the parent is left after."""
    seen: list[str] = []
    step = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; echo started; sleep 3"

    def out(line: str) -> None:
        seen.append(line)
        if line == "started":  # the step's shell runs (then its sleep): read its cgroups
            for path in _pids_cgroups_of_the_step():
                limit = CGROUP_ROOT / "pids" / Path(path).parent.relative_to("/") / "pids.max"
                seen.extend([path, f"pids.max {limit.read_text().strip()}"])

    engine.build(request("fits", step), out)
    assert str(MEMORY) in seen  # the step's memory.limit_in_bytes
    (path,) = {line for line in seen if line.startswith("/orch_build-")}
    assert path.startswith(f"/orch_build-{OWNER}-") and path.endswith("/steps")
    assert f"pids.max {PIDS}" in seen
    assert not parents_left()


def _pids_cgroups_of_the_step() -> list[str]:
    """The pids cgroups of the processes in OWNER's builds' parent cgroups (the step's), read
    before the step ends."""
    found = []
    for cgroup in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            lines = cgroup.read_text().splitlines()
        except OSError:
            continue
        found += [
            line.split(":", 2)[2]
            for line in lines
            if ":pids:" in line and line.split(":", 2)[2].startswith(f"/orch_build-{OWNER}-")
        ]
    return found


def test_a_step_past_the_memory_limit_fails_the_build_naming_it(engine: PodmanEngine) -> None:
    step = 'python3 -c "b = bytearray(400 * 2**20); print(len(b))"'
    with pytest.raises(BuildFailed) as failed:
        engine.build(request("memory", step), lambda line: None)
    assert failed.value.message == (
        "A step of the build was killed at the 128 MiB memory limit that ORCH_BUILD_MEMORY gives build steps"
    )
    assert "raise ORCH_BUILD_MEMORY" in failed.value.fix
    assert "exit_code" not in failed.value.details  # not a step's own failure
    assert not parents_left()


def test_a_step_that_fills_a_tmpfs_mount_to_the_memory_limit_fails_the_build_naming_it(
    engine: PodmanEngine,
) -> None:
    """A tmpfs mount's files are the step's memory: its writer is killed, yet the step ends with
    1, not 137 (a found defect: the build said only "exit code 1"). The step says `exit 1`
    itself: after the writer, the kernel kills whichever process the files' charge leaves no
    room for, and on a loaded CI it once spared the shell, whose `echo` ended the step with 0."""
    step = "--mount=type=tmpfs,target=/t head -c 400M /dev/zero > /t/x; df -h /t; echo done; exit 1"
    with pytest.raises(BuildFailed) as failed:
        engine.build(request("tmpfs", step), lambda line: None)
    assert failed.value.message == (
        "A step of the build was killed at the 128 MiB memory limit that ORCH_BUILD_MEMORY gives build steps"
    )
    assert "exit_code" not in failed.value.details
    assert not parents_left()


def test_a_step_that_wrote_more_files_than_the_memory_limit_fails_as_itself(engine: PodmanEngine) -> None:
    """Its page cache takes the steps' memory peak to the limit, but nothing was killed: its own
    exit code is the reason."""
    with pytest.raises(BuildFailed) as failed:
        engine.build(request("cache", "head -c 300M /dev/zero > /big; rm /big; exit 3"), lambda line: None)
    assert failed.value.details.get("exit_code") == 3


def test_a_step_past_the_process_limit_fails_the_build_naming_it(engine: PodmanEngine) -> None:
    """A fork bomb's beginning: 200 processes at once, with a limit of 64."""
    marker = str(7_650_000 + os.getpid())
    step = f"for i in $(seq 200); do sleep {marker} & done; wait"
    with pytest.raises(BuildFailed) as failed:
        engine.build(request("pids", step), lambda line: None)
    assert failed.value.message == (
        "A step of the build failed once the build's steps had reached the 64 processes and threads "
        "that ORCH_BUILD_PIDS allows them at once"
    )
    assert "raise ORCH_BUILD_PIDS" in failed.value.fix
    assert not running(f"sleep {marker}")
    assert not parents_left()


def test_a_stopped_limited_build_leaves_nothing_running(engine: PodmanEngine) -> None:
    """Stopped mid-step (as a delete or the server's stop stops it): the step's processes, its
    working container and the build's parent cgroup are gone."""
    marker = str(7_600_000 + os.getpid())
    started = threading.Event()
    with pytest.raises(BuildFailed) as failed:
        engine.build(
            request("stopped", f"echo started && sleep {marker}"),
            lambda line: started.set() if line == "started" else None,
            should_stop=started.is_set,
        )
    assert failed.value.details.get("stopped")
    assert not running(f"sleep {marker}")
    assert not working_containers(OWNER)
    assert not parents_left()


def test_leftover_parents_of_a_killed_servers_build_are_ended(engine: PodmanEngine) -> None:
    """What a server killed mid-step leaves in a build's parent cgroup (as if its `podman build`
    and the step's container in the runtime were gone already) is ended by the owner's next
    start, and the parent removed."""
    limits = build_limits.Limits.of(MEMORY, PIDS, f"{OWNER}/0123456789abcdef")
    limits.start()
    folder = CGROUP_ROOT / "pids" / f"orch_{limits.name}"
    marker = str(7_700_000 + os.getpid())
    child = subprocess.Popen(
        ["sh", "-c", f"echo $$ > {folder}/cgroup.procs && exec sleep {marker}"], start_new_session=True
    )
    try:
        for _ in range(200):  # until the child is in the cgroup
            if (folder / "cgroup.procs").read_text().split():
                break
            time.sleep(0.05)
        assert build_limits.leftovers(OWNER) == [limits.name]
        engine.remove_build_leftovers(OWNER)
        child.wait(10)
        assert not running(f"sleep {marker}")
        assert not parents_left()
    finally:
        if child.poll() is None:
            child.kill()
