"""What orch needs from a container engine, as a small Protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orch.engine.network import Network
from orch.errors import BuildFailed as BuildFailed  # what `build` raises (defined in errors.py)

LABEL_PREFIX = "org.orch."


def repository_of(ref: str) -> str:
    """An image reference without its tag or digest: registry.example.com:5000/orch/x:1 ->
    registry.example.com:5000/orch/x (a port's colon comes before the last slash)."""
    name = ref.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return f"{head}{slash}{last.split(':', 1)[0]}"


@dataclass(frozen=True)
class ImageInfo:
    id: str
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class BuildRequest:
    containerfile: str
    tag: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # host path -> container path, mounted read-only into every RUN step
    mounts: Mapping[str, str] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    timeout: float | None = None
    context: Path | None = None  # only the platform's own recipes have one; user builds never
    network: Network = Network.SANDBOX  # what RUN steps reach: outbound only
    # Whose build this is (a platform's instance): what a killed build leaves behind (Buildah's
    # working container) is found by it, see Engine.remove_build_leftovers.
    owner: str = ""
    # What the build's steps may write while it runs (its working containers' writable layers),
    # and the free space it must leave on the container storage's disk; 0: no bound. Past
    # either, the build is stopped as a timeout stops it (engine/build_disk.py).
    max_size: int = 0
    disk_reserve: int = 0
    # The memory limit of each RUN step, and the processes the steps may have at once
    # (engine/build_limits.py); 0: none.
    memory: int = 0
    pids: int = 0


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool = True
    # What the run brings (its bundle, its dependencies) rather than what the sandbox is: a
    # sandbox started ahead of need gets it when the run is handed over (docs/warm-sandboxes.md).
    late: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """One sandbox: what runs, in which image, with which limits. Nothing is optional by accident:
    the defaults are the strict ones (no network, read-only root, all capabilities dropped)."""

    image: str
    argv: Sequence[str]
    name: str
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    mounts: Sequence[Mount] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # path -> mount options
    network: Network = Network.NONE
    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None
    read_only: bool = True
    stdin: bytes = b""
    cap_add: Sequence[str] = ()  # capabilities kept although all others are dropped (services)


@dataclass(frozen=True)
class ContainerExit:
    exit_code: int
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False
    # The sandbox's process count reached its pids limit, as its cgroup's counters say (read by
    # the launcher before the cgroup goes); a failed sandbox's only: a fork or thread refused.
    pids_limit_reached: bool = False
    # Seconds spent in each phase of the sandbox's life, where the launcher knows them:
    # prepare (root, config), start (launch to the process running), run, exit (to cleaned up).
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)
    warm: bool = field(default=False, compare=False)  # handed to a sandbox started ahead of need


@dataclass(frozen=True)
class ContainerInfo:
    """A container as `podman ps -a` lists it (detached ones: services)."""

    id: str
    name: str
    state: str  # created, running, exited, ...
    exit_code: int
    labels: Mapping[str, str] = field(default_factory=dict)
    started_at: float = 0.0  # Unix time

    @property
    def running(self) -> bool:
        return self.state == "running"


class Engine(Protocol):
    name: str

    def prepare(self) -> None:
        """Make the engine ready for sandboxes (their networks and isolation rules); idempotent,
        and done on first use anyway: a server calls it at start so a problem shows at once."""
        ...

    def build(
        self,
        request: BuildRequest,
        on_output: Callable[[str], None],
        on_start: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImageInfo:
        """Build an image, streaming each output line to `on_output`; raise BuildFailed. A build
        still running at `request.timeout`, or once `should_stop()` (asked about once a second)
        says so, is stopped with everything it started (its RUN step's processes too), and
        raises BuildFailed (`stopped=True` in its details for the latter); so is one whose steps
        wrote more than `request.max_size`, or left less than `request.disk_reserve` free."""
        ...

    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str]
    ) -> ImageInfo: ...

    def inspect_image(self, ref: str) -> ImageInfo | None: ...

    def images(self, labels: Mapping[str, str]) -> list[ImageInfo]: ...

    def push_image(self, ref: str, destination: str, tls_verify: bool = True) -> str:
        """Push the local image `ref` to the registry reference `destination` (REPO:TAG); return
        what names exactly that content there, `REPO@sha256:...`. Raise EngineError."""
        ...

    def pull_image(self, digest_ref: str, tag: str, tls_verify: bool = True) -> ImageInfo:
        """Pull `digest_ref` (REPO@sha256:...) from its registry and tag it `tag` here, the name
        the platform's records use for it. Raise EngineError."""
        ...

    def remove_image(self, ref: str) -> None: ...

    def untag_image(self, ref: str) -> None:
        """Take the name `ref` off its image (no such name is fine). An image a container still
        uses cannot be removed; without a name it goes once nothing uses it (see
        remove_untagged_images, and the sandbox launcher's own at each sandbox's end)."""
        ...

    def run_container(
        self,
        spec: ContainerSpec,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_exit: Callable[[ContainerExit], None] | None = None,
    ) -> ContainerExit:
        """Run a sandbox to its end, streaming its output; the container is removed afterwards.
        `timeout` and `should_stop` kill it (reported as timed_out / cancelled). `on_exit`: called
        with the outcome once it is known (here, after the removal)."""
        ...

    def remove_containers(self, labels: Mapping[str, str]) -> int:
        """Force-remove every container with these labels; return how many."""
        ...

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        labels: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        network: Network = Network.NONE,
        timeout: float = 120,
    ) -> ProcessResult:
        """Run `argv` in a fresh, removed-afterwards container and collect its output."""
        ...

    def start_container(self, spec: ContainerSpec, log_path: Path, log_max: int) -> str:
        """Start `spec` detached (it outlives the server), its output written to `log_path`,
        which starts afresh whenever it reaches `log_max` bytes; return its id. It is not
        removed when it exits."""
        ...

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Every container (running or not) with these labels."""
        ...

    def container_address(self, name: str) -> str | None:
        """The container's IP address on its network, or None."""
        ...

    def remove_build_leftovers(self, owner: str) -> int:
        """End `owner`'s builds still running (a stopped server's, found by their owner, whatever
        the store says of them) and what they started, and remove the working containers and
        temporary directories of `owner`'s builds that were killed mid-way; call it only while
        none of `owner`'s builds runs. Return how many containers."""
        ...

    def storage_disk(self) -> tuple[Path, int] | None:
        """Where builds write (the container storage) and the size of the file system it lies
        on, in bytes; None for an engine without one."""
        ...

    def remove_untagged_images(self, owner: str) -> int:
        """Remove the images of `owner`'s (label org.orch.instance) that no tag names and no
        container uses: what a build a kill interrupted after its commit left, or an image a
        rebuild replaced while a run still used it. Call it only while none of `owner`'s builds
        runs (their layers are untagged until they finish). Return how many images went."""
        ...

    def remove_leftovers(self, name_prefix: str) -> int:
        """Remove what containers named `name_prefix`... left in the engine after they were gone
        (their parent cgroups, when a removal was cut short); return how many were swept."""
        ...

    def remove_container(self, name: str, timeout: int = 10) -> None:
        """Stop (SIGTERM, then SIGKILL after `timeout` s) and remove one container; gone is fine."""
        ...
