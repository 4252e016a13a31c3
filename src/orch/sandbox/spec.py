"""The sandbox a run gets: hard limits, a writable but bounded root of its own, a private working
directory, the bundle read-only."""

from __future__ import annotations

import dataclasses
import functools
import mmap
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orch.engine.base import ContainerSpec, Mount
from orch.engine.network import Network
from orch.sandbox.deps import Deps
from orch.sandbox.layout import BUNDLE, HOME, SANDBOX_USER, SCRATCH, WORKDIR
from orch.sizes import format_apart, format_size

# The bundle is copied into the tmpfs working directory, so the agent may write next to its
# files while nothing of the host is writable.
_PRELUDE = f'cp -R {BUNDLE}/. {WORKDIR}/ && exec "$@"'
_EXEC = 'exec "$@"'


def without_copy(argv: Sequence[str]) -> tuple[tuple[str, str], list[str]] | None:
    """For a launcher that copies the bundle itself (a warm sandbox's helper, handoff.c): a run's
    command (`run_spec`) as the copy to make, (FROM, TO), and the command to run after it, the
    same shell left to start it (its own additions to the environment stay the same); None for
    any other command."""
    if len(argv) < 5 or list(argv[:3]) != ["/bin/sh", "-c", _PRELUDE]:
        return None
    return (BUNDLE, WORKDIR), ["/bin/sh", "-c", _EXEC, *argv[3:]]


@dataclass(frozen=True)
class Limits:
    cpus: float
    memory_bytes: int
    pids: int
    timeout: int  # seconds of wall-clock time

    @property
    def work_bytes(self) -> int:
        """Size of the writable places; tmpfs pages count against the memory limit too."""
        return work_bytes(self.memory_bytes)


MIN_WORK = 16 * 1024 * 1024


def work_bytes(memory_bytes: int) -> int:
    """Size of the working directory (and /tmp) of a sandbox with this memory limit."""
    return max(memory_bytes // 2, MIN_WORK)


def on_tmpfs(sizes: Iterable[int]) -> int:
    """What files of these sizes take on a tmpfs, which keeps each in whole pages."""
    page = mmap.PAGESIZE
    return sum(-(-size // page) * page for size in sizes)


@functools.lru_cache(maxsize=1024)
def bundle_copy_bytes(bundle_dir: str) -> int:
    """What the copy of an extracted bundle (its files never change once extracted: the path
    names their content) takes in the working directory."""
    return tree_copy_bytes(bundle_dir)


def tree_copy_bytes(root: str) -> int:
    """What a copy of the files under `root` takes in the working directory: each regular file
    in whole pages, links and directories nothing; measured again at each call."""
    sizes = []
    for top, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(top, name))
            sizes.append(st.st_size if stat.S_ISREG(st.st_mode) else 0)
    return on_tmpfs(sizes)


def bundle_misfit(copy_bytes: int, memory_bytes: int) -> str | None:
    """Why a bundle whose copy takes `copy_bytes` can't be copied into the working directory of
    a sandbox with this memory limit (its copy would fail before the agent starts); None when it
    fits."""
    work = work_bytes(memory_bytes)
    if copy_bytes <= work:
        return None
    given = "half the memory limit" if memory_bytes // 2 >= MIN_WORK else "at least 16 MiB"
    return (
        f"The bundle ({format_apart(copy_bytes, work)}) does not fit the "
        f"{format_size(work)} working directory that a memory limit of {format_size(memory_bytes)} "
        f"gives ({given})."
    )


# What a user can do about a bundle_misfit.
BUNDLE_MISFIT_FIX = (
    "Raise resources.memory in orch.yaml, or make the bundle smaller (.orchignore), then publish again."
)


def with_deps(env: Mapping[str, str], deps_env: Mapping[str, str]) -> dict[str, str]:
    """The dependencies' variables over a run's own `env`: their search path first, then the
    run's own value of it (an agent's `env: {PYTHONPATH: /work/lib}` still found: it was
    replaced as soon as the agent had a requirements.txt)."""
    return {k: f"{v}:{env[k]}" if env.get(k) else v for k, v in deps_env.items()}


def run_spec(
    *,
    name: str,
    image: str,
    command: Sequence[str],
    bundle_dir: Path,
    deps: Deps,
    env: Mapping[str, str],
    stdin: bytes,
    limits: Limits,
    network: bool,
    labels: Mapping[str, str],
    host_mounts: Sequence[Mount] = (),
) -> ContainerSpec:
    tmpfs_opts = f"rw,exec,nosuid,nodev,mode=1777,size={limits.work_bytes}"
    return ContainerSpec(
        image=image,
        argv=["/bin/sh", "-c", _PRELUDE, "orch-run", *command],
        name=name,
        labels=labels,
        env={**env, "HOME": HOME, **with_deps(env, deps.env)},  # HOME as a template's user has it
        workdir=WORKDIR,
        user=SANDBOX_USER,
        mounts=[
            *host_mounts,
            Mount(str(bundle_dir), BUNDLE, late=True),
            *(dataclasses.replace(m, late=True) for m in deps.mounts),
        ],
        tmpfs={WORKDIR: tmpfs_opts, SCRATCH: tmpfs_opts},
        network=Network.SANDBOX if network else Network.NONE,
        memory_bytes=limits.memory_bytes,
        cpus=limits.cpus,
        pids=limits.pids,
        # A root of its own to change, as a template's users expect (/home/user included), bounded
        # and counted in the memory limit by the launcher; nothing of it reaches the image.
        read_only=False,
        stdin=stdin,
    )
