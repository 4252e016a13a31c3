"""What a stopped `podman build` leaves running on the host, found and ended.

Killing `podman build` (its process group) does not end the RUN step it was running: Buildah's
OCI runtime starts the step's processes in a session, a process group and a cgroup of their own
(`buildah-buildahNNN`; for a build with limits, `steps` under the build's parent cgroup, which
engine/build_limits.py empties first), so they go on, reparented to PID 1, for as long as the
step would. What
links them to the build is Buildah's bundle directory for the step, `TMPDIR/buildahNNN` (its
`config.json` names the working container by the first 12 characters of its id, as the step's
hostname), and the step's cgroup, named after that directory. So, given the working containers
of the builds to end (found by their owner's build argument, see engine/podman.py):

    steps(ids)        the bundle directories of those containers' RUN steps
    end(step)         kill every process in the step's cgroup, then remove the step's container
                      from the OCI runtime's state (engine/runtime_state.py: runc keeps it,
                      stopped, for good otherwise), the cgroup and the bundle directory
    orphans(match)    the `podman build` processes whose owner argument `match` accepts
    kill_group(pid)   kill a `podman build` and its process group, and wait until it is gone
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from orch.engine import runtime_state

CGROUP_ROOT = Path("/sys/fs/cgroup")
BUILDAH_TMP = Path("/var/tmp")  # noqa: S108  # Buildah's default, only read and cleaned here
_ROUNDS = 50  # passes over a step's cgroup (a step that forks while it is killed needs more than one)


def _bundle_roots() -> list[Path]:
    """Where Buildah makes its bundle directories: $TMPDIR, else /var/tmp (as Buildah chooses)."""
    roots = [Path(os.environ.get("TMPDIR") or BUILDAH_TMP), BUILDAH_TMP]
    return list(dict.fromkeys(roots))


def steps(container_ids: Iterable[str]) -> list[Path]:
    """The bundle directories of the RUN steps of these working containers (full ids)."""
    hostnames = {cid[:12] for cid in container_ids}
    if not hostnames:
        return []
    found = []
    for root in _bundle_roots():
        for bundle in root.glob("buildah[0-9]*"):
            try:
                hostname = json.loads((bundle / "config.json").read_text()).get("hostname")
            except (OSError, ValueError):
                continue
            if hostname in hostnames:
                found.append(bundle)
    return found


def cgroup_name(bundle: Path) -> str:
    """The name of the cgroup of the step whose bundle directory is `bundle` (and of its
    container, to the OCI runtime and to CNI)."""
    return f"buildah-{bundle.name}"


def end(bundle: Path) -> int:
    """Kill every process of the step whose bundle directory is `bundle`, then remove its
    container from the runtime's state, its cgroups and the directory. Return how many processes
    were killed."""
    name = cgroup_name(bundle)
    killed: set[int] = set()
    cgroups: set[Path] = set()
    for _ in range(_ROUNDS):
        found = _processes_in(name, cgroups)
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.02)
    if runtime_state.exists(name):  # the step's container, as its `podman build` left it
        runtime_state.delete(name)
    for path in [*cgroups, *CGROUP_ROOT.glob(f"*/{name}"), CGROUP_ROOT / name]:
        _remove_cgroup(path)
    if not _mounted_under(bundle):  # never follow a mount out of the directory
        shutil.rmtree(bundle, ignore_errors=True)
    return len(killed)


def _processes_in(name: str, cgroups: set[Path]) -> list[int]:
    """The processes in a cgroup called `name` (any hierarchy, any parent); the cgroups' paths
    are added to `cgroups`."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        mine = False
        for line in lines:
            _, _, controllers_path = line.partition(":")
            controllers, _, where = controllers_path.partition(":")
            leaf = where.rsplit("/", 1)[-1]
            if leaf in (name, f"{name}.scope"):
                mine = True
                cgroups.add(_cgroup_path(controllers, where))
        if mine and not _zombie(path.parent):
            found.append(int(path.parent.name))
    return found


def _zombie(proc: Path) -> bool:
    """Whether the process is dead, waiting to be reaped (gone counts as dead)."""
    try:
        return (proc / "stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _cgroup_path(controllers: str, where: str) -> Path:
    """The directory of a cgroup as /proc/PID/cgroup names it (cgroup v1 or v2)."""
    if not controllers:  # v2, or the unified hierarchy of a hybrid v1 machine
        unified = CGROUP_ROOT / "unified"
        return (unified if unified.is_dir() else CGROUP_ROOT) / where.lstrip("/")
    directory = controllers.removeprefix("name=")
    return CGROUP_ROOT / directory / where.lstrip("/")


def _remove_cgroup(path: Path) -> None:
    with contextlib.suppress(OSError):  # gone already, or not empty yet: nothing to keep it for
        path.rmdir()


def _mounted_under(directory: Path) -> bool:
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return True
    inside = f"{directory}/"
    return any(
        len(fields) > 4 and (fields[4] == str(directory) or fields[4].startswith(inside))
        for fields in (line.split() for line in mounts)
    )


def orphans(match: Callable[[str], bool], arg: str) -> list[int]:
    """The `podman build` processes with a build argument `arg=VALUE` that `match(VALUE)` accepts."""
    found = []
    prefix = f"{arg}=".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) < 2 or not argv[0].endswith(b"podman") or argv[1] != b"build":
            continue
        values = [a[len(prefix) :].decode(errors="replace") for a in argv if a.startswith(prefix)]
        if any(match(v) for v in values):
            found.append(int(cmdline.parent.name))
    return found


def kill_group(pid: int) -> None:
    """Kill the process group of `pid` (a `podman build` started in a session of its own), and
    wait until it is gone or a zombie (of a dead server's, reparented), for a few seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)  # one that is not its group's leader
    for _ in range(50):
        if _zombie(Path(f"/proc/{pid}")):
            return
        time.sleep(0.1)
