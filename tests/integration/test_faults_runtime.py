"""Kills that leave a container in Podman's OCI runtime (runc) after Podman let go of it, on the
real machine: a server killed while it stops a service's container (that ignores SIGTERM), and
a server killed during a build's RUN step. After the recovery a start does, nothing of either
is left running, nor in runc's state."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orch.builder import base_images
from orch.engine import PodmanEngine, build_steps, runtime_state
from orch.engine.base import ContainerSpec
from orch.engine.podman_run import CGROUP_ROOT, cgroup_parent
from tests.integration.test_engine import killed_once_started, running, sleeper, working_containers

pytestmark = pytest.mark.integration

PREFIX = f"orch-faultsrt{os.getpid()}-"
# A service that ignores SIGTERM: its stop takes the whole grace, then a SIGKILL.
IGNORES_SIGTERM = [
    "python3",
    "-c",
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(3600)",
]
# A server that stops a service's container (a restart's or a redeploy's takedown) and is killed
# during the stop's 10 s: its `podman` goes on without it, or dies writing to the server's pipe.
STOPPING_SERVER = """
import sys
from orch.engine import PodmanEngine
PodmanEngine().remove_container(sys.argv[1], timeout=10)
"""


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=False)


def _state(name: str) -> str:
    """The container's state as Podman says it ("" once Podman has no record of it)."""
    res = _podman("container", "inspect", "--format", "{{.State.Status}}", name)
    return res.stdout.strip() if res.returncode == 0 else ""


def _wait_for(what: str, condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:.0f} s"
        time.sleep(0.1)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """A running service-like container (started as the supervisor starts one, with a parent
    cgroup of its own), that ignores SIGTERM: (name, runc's id of it, its process id)."""
    engine = PodmanEngine()
    name = f"{PREFIX}svc"
    spec = ContainerSpec(
        image=base_images.image_tag("python"),
        argv=IGNORES_SIGTERM,
        name=name,
        labels={"org.orch.test": PREFIX},
        memory_bytes=64 * 1024 * 1024,
    )
    engine.start_container(spec, tmp_path / "ctr.log", 1024 * 1024)
    info = json.loads(_podman("container", "inspect", name).stdout)[0]
    cid, pid = info["Id"], int(info["State"]["Pid"])
    try:
        yield name, cid, pid
    finally:
        _podman("rm", "-f", "-t", "0", name)
        with contextlib.suppress(Exception):
            runtime_state.delete(cid)
        for path in CGROUP_ROOT.glob(f"*/{cgroup_parent(name).lstrip('/')}"):
            for child in sorted(path.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()


def _nothing_runs(name: str, cid: str, pid: int) -> None:
    assert not runtime_state.exists(cid), f"runc still has {cid[:12]} of {name}"
    assert not _alive(pid), f"the container's process {pid} still runs"
    assert not [p for p in CGROUP_ROOT.glob(f"*/{cgroup_parent(name).lstrip('/')}")], "its cgroups"
    assert _state(name) == ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[1].startswith("Z")


def _kill_mid_stop(argv: list[str], name: str) -> None:
    """Start `argv` (a stopper of `name`, its output to a pipe as a server reads it), and kill it
    once Podman shows the container stopping: SIGTERM sent, the grace not over."""
    stopper = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(f"{name} stopping", lambda: _state(name) == "stopping")
    finally:
        stopper.kill()
        stopper.communicate()


def test_a_stop_cut_short_by_a_killed_server_is_ended_by_the_next_removal(
    service: tuple[str, str, int],
) -> None:
    """A server killed during a service container's stop leaves it `stopping` to Podman; the
    next start removes it as an orphan (the supervisor's first pass, engine.remove_container).
    Before, that removal was a `podman rm -f`, which dropped Podman's record of a `stopping`
    container and left it running in runc, with its conmon and cgroups, for good."""
    name, cid, pid = service
    _kill_mid_stop([sys.executable, "-c", STOPPING_SERVER, name], name)
    assert _state(name) == "stopping" and _alive(pid)
    PodmanEngine().remove_container(name, timeout=1)  # as the next start's pass removes an orphan
    _nothing_runs(name, cid, pid)


def test_the_sweep_ends_a_container_that_podman_let_go_of(service: tuple[str, str, int]) -> None:
    """A container already lost that way (Podman has no record, runc runs it: left by a server
    of before this fix) is ended by the start's sweep of what gone containers left, found by its
    parent cgroup (this platform's prefix) among runc's containers; before, the sweep only tried
    to remove the cgroup, which its processes kept."""
    name, cid, pid = service
    _kill_mid_stop(["podman", "rm", "-f", "-t", "10", name], name)
    _podman("rm", "-f", "-t", "5", name)  # the removal of before: Podman lets go of it...
    assert _state(name) == "" and runtime_state.exists(cid) and _alive(pid)  # ...runc does not
    assert PodmanEngine().remove_leftovers(PREFIX) == 1
    _nothing_runs(name, cid, pid)


OWNER = f"faultsrt-owner-{os.getpid()}"
# A server killed during a build: its `podman build` goes on without it, in its own session.
KILLED_BUILDER = """
import sys
from orch.engine import PodmanEngine
from orch.engine.base import BuildRequest
request = BuildRequest(containerfile=sys.argv[1], tag="localhost/orch-faultsrt/killed:1", no_cache=True,
                       owner=sys.argv[2], timeout=600)
PodmanEngine().build(request, lambda line: print(line, flush=True))
"""


@pytest.mark.serial  # no other build may run: their steps' addresses look alike
def test_a_killed_builds_step_leaves_nothing_in_the_runtime() -> None:
    """The owner's next start ends what a killed build left (engine/build_steps.py): the RUN
    step's processes, cgroups and bundle went before, but runc kept the step's container
    (`buildah-buildahN`, stopped) in its state for good."""
    engine = PodmanEngine()
    marker = str(7_200_000 + os.getpid())
    try:
        killed_once_started(KILLED_BUILDER, sleeper(marker), OWNER)
        steps = build_steps.steps(working_containers(OWNER))
        names = [build_steps.cgroup_name(step) for step in steps]
        assert len(names) == 1 and runtime_state.exists(names[0])
        assert engine.remove_build_leftovers(OWNER) == 1
        assert not running(f"sleep {marker}")
        assert not runtime_state.exists(names[0]), f"runc still has {names[0]}"
        assert not steps[0].exists()
    finally:
        engine.remove_build_leftovers(OWNER)
        _podman("rmi", "-f", "localhost/orch-faultsrt/killed:1")
