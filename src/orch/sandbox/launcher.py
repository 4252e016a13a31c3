"""What starts a run's sandbox, and the isolation runtimes a platform offers.

`runc` (the default) and `gvisor` (gVisor's runsc: a kernel of its own in user space between the
agent and the host) both start sandboxes through `sandbox.runc.Launcher`, the OCI runtime called
directly. The Podman engine stays for builds, dependency installs and services.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Protocol

from orch.engine.base import ContainerExit, ContainerSpec


class Isolation(StrEnum):
    RUNC = "runc"  # Linux namespaces, cgroups, seccomp, no capabilities: the host's kernel
    GVISOR = "gvisor"  # the same, plus gVisor's own kernel: the agent never calls the host's

    @property
    def runtime(self) -> str:
        return {"runc": "runc", "gvisor": "runsc"}[self.value]


class Launcher(Protocol):
    def run_container(
        self,
        spec: ContainerSpec,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_exit: Callable[[ContainerExit], None] | None = None,
    ) -> ContainerExit:
        """Run a sandbox to its end, streaming its output; everything of it is removed after.
        `on_exit` is called with the outcome as soon as it is known, before the removal (so a
        run's end is recorded while its sandbox is still being cleaned up)."""
        ...


class Sandboxes(Launcher, Protocol):
    """A launcher that owns what it leaves on the host: sweepable after a kill, closable."""

    def kill(self, prefix: str) -> list[str]:
        """Kill this launcher's sandboxes named `prefix`... (a killed server's); return their names."""
        ...

    def sweep(self, prefix: str) -> int:
        """Remove what sandboxes named `prefix`... left (a killed server); return how many."""
        ...

    def close(self) -> None:
        """Release what the launcher holds ahead of need (prepared namespaces, image holds)."""
        ...

    def let_go(self) -> None:
        """Let go of, and remove, the images it holds that lost their name (an environment's
        delete or rebuild took it) and that no sandbox of it uses now."""
        ...

    def image_id(self, ref: str) -> str:
        """The id of the image `ref` names now, from the launcher's own image cache (what keys a
        run's dependency cache); raises EngineError when the image is missing."""
        ...


def sweep_all(launchers: Iterable[Sandboxes], prefix: str) -> int:
    """Remove what sandboxes named `prefix`... left in every runtime of `launchers` (all of one
    owner's, which share one directory of bundles). Each runtime kills its own first: a launcher
    tearing down another runtime's live sandbox could not end it and would wait on its cgroups
    (~2 s each). Return how many were found."""
    launchers = list(launchers)
    for launcher in launchers:
        launcher.kill(prefix)
    return sum(launcher.sweep(prefix) for launcher in launchers)
