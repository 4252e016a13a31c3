"""The Podman engine: the `podman` command line, driven with subprocess."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, final

from orch.engine import build_disk, build_limits, build_steps, podman_run, programs, runtime_state
from orch.engine import network as networks
from orch.engine.base import (
    BuildRequest,
    ContainerExit,
    ContainerInfo,
    ContainerSpec,
    Engine,
    ImageInfo,
    ProcessResult,
    repository_of,
)
from orch.engine.network import Network
from orch.errors import BuildFailed, EngineError
from orch.sandbox import seccomp

log = logging.getLogger(__name__)

_FIX = "Run scripts/setup to install and configure Podman, then try again."
# Where Debian's podman package puts it. orch runs the `podman` that PATH finds: one that is
# installed here while PATH lacks its folder is said so, not called missing.
INSTALLED = Path("/usr/bin/podman")
# What Podman says of an image whose store entry lacks a piece (a writer killed half-way).
_BROKEN_IMAGE = re.compile(r'for image with ID "([0-9a-f]{64})" \(consider removing the image')
# A build argument no Dockerfile declares (so it changes no layer's cache): Buildah keeps it in
# the working container's state, which is how a killed build's leftover is found later.
OWNER_ARG = "ORCH_BUILD_OWNER"
_UNUSED_OWNER = f"[Warning] one or more build args were not consumed: [{OWNER_ARG}]"
# Podman's layer cache lookup reads every image, and a step's container starts from the cached
# layer it found, by id; one removed at either moment (by another build's cleanup, a redeploy, an
# `rmi`) fails the build, which is then tried again. (A base image that is missing is named, not
# an id: that failure is the user's, and lasts.)
_CACHE_RACE = re.compile(
    r"checking if cached image exists from a previous build|"
    r"creating build container: (sha256:)?[0-9a-f]{12,64}: image not known"
)
_REGISTRY_FIX = (
    "Check that the registry ORCH_REGISTRY names is running and reachable from this machine "
    "(for a plain-HTTP one, set ORCH_REGISTRY_TLS_VERIFY=false)."
)
# A registry that did not answer, in the chain of errors Podman ends with: its address, then what
# went wrong (after the URL it asked, when it got as far as a request).
_UNREACHABLE = re.compile(r'pinging container registry (\S+?): (?:Get "[^"]*": )?(.+)')
# An image of a few GB over a slow link: longer than any build step's output gap, shorter than never.
_TRANSFER_TIMEOUT = 1800
# Longer lines of build output come in pieces of this many characters: a step that prints
# gigabytes without a newline must not be read into the server's memory at once.
MAX_LINE = 64 * 1024


def _absent(binary: str) -> EngineError:
    """Why `binary` (Podman) could not be run: PATH lacks its folder, or it is not installed."""
    if binary == INSTALLED.name and INSTALLED.exists():
        return EngineError(*programs.not_on_path(binary, INSTALLED))
    return EngineError("Podman is not installed.", _FIX)


def _context_prefix(owner: str | None) -> str:
    """How the temporary directory of a build for `owner` is named."""
    return f"orch-build-{owner}-" if owner else "orch-build-"


def _release_build_addresses(only: set[str] | None = None) -> None:
    """A `podman build` killed during a RUN step never detaches that step from its network: the
    step's address stays reserved (a /24 holds 253) and its NAT rule stays. Those of the steps
    `only` names (their CNI ids, build_steps.cgroup_name) are released at once; without it,
    since which build a reservation was for is not written anywhere, they are released only
    while no build runs on this machine at all: the reservations are read first, then the
    processes, so a build that starts in between is not touched."""
    from orch.sandbox import cni  # the launcher's CNI calls; imported here, a start-up sweep

    found = []
    for name in (Network.SANDBOX.podman_name, Network.SERVICE.podman_name):
        try:
            network = cni.load(name)
        except EngineError:
            continue
        held = cni.reservations(network, "buildah-")
        found += [(network, cid) for cid in held if only is None or cid in only]
    if found and (only is not None or not _builds_running()):
        for network, cid in found:
            cni.delete(network, cid, None, None)
        networks.remove_masquerade({cid for _, cid in found})


def _builds_running() -> bool:
    """Whether any `podman build` (or buildah) process runs on this machine."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and Path(argv[0].decode(errors="replace")).name in ("podman", "buildah")
            and b"build" in argv[1:4]
        ):
            return True
    return False


@final  # so that mypy reports a method of Engine missing here
class PodmanEngine(Engine):
    name = "podman"

    def __init__(self, binary: str = "podman") -> None:
        self.binary = binary
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._storage: build_disk.Storage | None = None

    def prepare(self) -> None:
        with self._prepare_lock:
            if not self._prepared:
                if shutil.which(self.binary) is None:  # said as such, not as a network's failure
                    raise _absent(self.binary)
                networks.ensure(self.binary)
                self._prepared = True

    def storage(self) -> build_disk.Storage:
        """Where Podman keeps its containers (asked once: `podman info` takes a third of a second)."""
        if self._storage is None:
            fmt = "{{.Store.GraphRoot}}\n{{.Store.GraphDriverName}}"
            root, driver = self._cmd("info", "--format", fmt).stdout.strip().split("\n")
            self._storage = build_disk.Storage(Path(root.strip()), driver.strip())
        return self._storage

    def storage_disk(self) -> tuple[Path, int] | None:
        root = self.storage().root
        st = os.statvfs(root)
        return root, st.f_blocks * st.f_frsize

    def _cmd(self, *args: str, timeout: float = 120, check: bool = True) -> ProcessResult:
        try:
            proc = subprocess.run(
                [self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            raise _absent(self.binary) from None
        except subprocess.TimeoutExpired:
            raise EngineError(f"podman {args[0]} did not finish in {timeout:.0f} s.", _FIX) from None
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise EngineError(f"podman {args[0]} failed: {' '.join(tail)}", _FIX)
        return ProcessResult(proc.returncode, proc.stdout, proc.stderr)

    def build(
        self,
        request: BuildRequest,
        on_output: Callable[[str], None],
        on_start: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImageInfo:
        self.prepare()
        replaced = self.inspect_image(request.tag)  # a build run again after a server stop
        # This build's own value of the owner argument, found in its working container's state:
        # what a stopped build leaves is removed by it, and no other build's.
        owner = f"{request.owner}/{secrets.token_hex(8)}" if request.owner else ""
        # Named by its owner, so that the owner's next start removes one a SIGKILL left behind.
        with tempfile.TemporaryDirectory(prefix=_context_prefix(request.owner)) as tmp:
            context = request.context or Path(tmp) / "context"
            context.mkdir(exist_ok=True)
            containerfile = Path(tmp) / "Containerfile"
            containerfile.write_text(request.containerfile)
            args = [self.binary, "build", "--layers", "--pull=never", "--force-rm"]
            # The steps run a workspace's code: the sandboxes' seccomp rules (no kernel keyrings,
            # no new user namespaces; sandbox/seccomp.py), not Podman's default.
            args.append(f"--security-opt=seccomp={seccomp.podman_profile()}")
            args.append(f"--network={request.network.podman_name}")
            args += ["-f", str(containerfile), "-t", request.tag]
            if request.no_cache:
                args.append("--no-cache")
            for k, v in sorted(request.labels.items()):
                args += ["--label", f"{k}={v}"]
            for host, inside in sorted(request.mounts.items()):
                args += ["-v", f"{host}:{inside}:ro"]
            for k, v in sorted(request.build_args.items()):
                args += ["--build-arg", f"{k}={v}"]
            if owner:
                args += ["--build-arg", f"{OWNER_ARG}={owner}"]
            # The steps' memory and process limits: a parent cgroup of the build's own.
            limits = build_limits.Limits.of(request.memory, request.pids, owner)
            args += limits.args()
            args.append(str(context))

            def output(line: str) -> None:
                if line != _UNUSED_OWNER:  # ours, not the user's: not worth a warning in their log
                    on_output(line)

            # What the steps write, bounded while they run: the working containers are found by
            # this build's owner argument, so a bound on their size needs one.
            disk = None
            if request.disk_reserve or (owner and request.max_size):
                max_size = request.max_size if owner else 0
                disk = build_disk.guard(self.storage(), OWNER_ARG, owner, max_size, request.disk_reserve)
            if disk and (full := disk.check()) and full.reserve:
                raise full.error([], started=False)  # below the reserve already: no step starts
            try:
                for attempt in range(3):
                    code: int | None = None  # none: cut short by an exception (the caller's output)
                    limits.start()
                    try:
                        code, tail, stopped = self._stream(
                            args, output, on_start, request.timeout, should_stop, disk.check if disk else None
                        )
                    finally:
                        if code is None or code < 0:
                            # Killed (a negative code: by a signal), it cleaned up nothing: what
                            # it started goes, its RUN step's processes, its working container,
                            # and its step's network address.
                            self._end_stopped(owner, limits)
                    if code == 0 or stopped or not any(_CACHE_RACE.search(line) for line in tail[-3:]):
                        break
                    output(f"(Podman's layer cache changed under the build; trying again, {attempt + 2}/3)")
                limited = limits.reached(code, tail) if code is not None and not stopped else None
            finally:
                limits.end()
        if isinstance(stopped, build_disk.Stop):
            raise stopped.error(tail)
        if stopped == _TIMEOUT:
            raise BuildFailed(
                f"The build was stopped after {request.timeout:.0f} s.",
                "Make the Dockerfile's steps faster, or raise ORCH_BUILD_TIMEOUT.",
                tail=tail,
            )
        if stopped:
            raise BuildFailed("The build was stopped.", "Build it again.", tail=tail, stopped=True)
        if limited is not None:
            raise limited
        if code != 0:
            raise BuildFailed("podman build failed.", "See the build log.", exit_code=code, tail=tail)
        info = self.inspect_image(request.tag)
        if info is None:
            raise EngineError(f"podman build finished but {request.tag} is missing.", _FIX)
        if replaced is not None and replaced.id != info.id:
            # The tag names the new image now; the old one would stay, untagged, for good. (One
            # that a container still uses stays until remove_untagged_images() finds it unused;
            # so does one that fails to go: the build itself succeeded.)
            with contextlib.suppress(EngineError):
                self.remove_image(replaced.id)
        return info

    def _end_stopped(self, owner: str, limits: build_limits.Limits) -> None:
        """End what a killed `podman build` started: its RUN step's processes (by its limits'
        cgroup, then by its container in the OCI runtime), its working container, and its
        step's network address."""
        if limits.end():
            log.info("ended the processes of a stopped build's RUN step (%s)", limits.name)
        if owner:
            try:
                self._end_builds(lambda value: value == owner)
            except EngineError as e:  # the owner's next start removes what stays
                log.warning("cleaning up after a stopped build: %s", e)

    def _stream(
        self,
        args: list[str],
        on_output: Callable[[str], None],
        on_start: Callable[[int], None] | None,
        timeout: float | None,
        should_stop: Callable[[], bool] | None = None,
        disk: Callable[[], build_disk.Stop | None] | None = None,
    ) -> tuple[int, list[str], str | build_disk.Stop]:
        """Run `args`, each line of output to `on_output`; return its exit code, its last lines,
        and why it was killed: "" (it was not), _TIMEOUT, _STOPPED (`should_stop` said so), or
        the Stop that `disk` returned."""
        try:
            proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                start_new_session=True,  # so a timeout can stop podman and its children together
            )
        except FileNotFoundError:
            raise _absent(self.binary) from None
        if on_start:
            on_start(proc.pid)
        done = threading.Event()
        why: list[str | build_disk.Stop] = []
        watcher = threading.Thread(
            target=_watch,
            args=(proc.pid, done, why, timeout, should_stop, disk),
            name="orch-build-watch",
            daemon=True,
        )
        watcher.start()
        tail: list[str] = []
        assert proc.stdout is not None
        try:
            for line in iter(lambda: proc.stdout.readline(MAX_LINE), ""):  # type: ignore[union-attr]
                line = line.rstrip("\n")
                tail = [*tail[-39:], line]
                on_output(line)
            code = proc.wait()
        finally:
            done.set()
            watcher.join()
            if proc.poll() is None:
                _kill_group(proc.pid)
                proc.wait()
            proc.stdout.close()
        return code, tail, (why[0] if why else "")

    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str]
    ) -> ImageInfo:
        args = ["import"]
        for change in [*changes, *(f"LABEL {k}={v}" for k, v in sorted(labels.items()))]:
            args += ["--change", change]
        self._cmd(*args, str(tarball), tag, timeout=600)
        info = self.inspect_image(tag)
        if info is None:
            raise EngineError(f"podman import finished but {tag} is missing.", _FIX)
        return info

    def inspect_image(self, ref: str) -> ImageInfo | None:
        res = self._cmd("image", "inspect", ref, check=False)
        if res.exit_code != 0:
            return None
        return _image_info(json.loads(res.stdout)[0])

    def images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        args = ["images", "--format", "json"]
        for k, v in labels.items():
            args += ["--filter", f"label={k}={v}"]
        broken: set[str] = set()
        for _ in range(8):
            res = self._cmd(*args, check=False)
            if res.exit_code == 0:
                break
            # Podman lists, then reads each image: one removed in between fails the whole listing.
            if "image not known" in res.stderr:
                continue
            # An image whose writer was killed half-way (its manifest never written) fails every
            # listing until it is removed, as Podman's message says: seen twice, a moment apart
            # (not a commit in progress), it is removed.
            found = _BROKEN_IMAGE.search(res.stderr)
            if found is None:
                break
            if found[1] in broken:
                log.warning("removing image %s: its store entry is broken (%s)", found[1], res.stderr.strip())
                self._cmd("rmi", "--force", found[1], check=False)
            broken.add(found[1])
            time.sleep(0.5)
        if res.exit_code != 0:
            raise EngineError(f"podman images failed: {res.stderr.strip()}", _FIX)
        data = json.loads(res.stdout or "[]")
        return [
            ImageInfo(
                id=d["Id"],
                size=int(d.get("Size", 0)),
                labels=d.get("Labels") or {},
                tags=tuple(d.get("Names") or ()),
            )
            for d in data
        ]

    def push_image(self, ref: str, destination: str, tls_verify: bool = True) -> str:
        repository = repository_of(destination)
        with tempfile.TemporaryDirectory(prefix="orch-push-") as tmp:
            digestfile = Path(tmp) / "digest"
            verify = f"--tls-verify={'true' if tls_verify else 'false'}"
            args = ("push", "--quiet", verify, "--digestfile", str(digestfile), ref, destination)
            res = self._cmd(*args, timeout=_TRANSFER_TIMEOUT, check=False)
            if res.exit_code != 0:
                raise EngineError(
                    f"podman push of {ref} to {destination} failed: {_registry_error(res)}.", _REGISTRY_FIX
                )
            digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if not digest.startswith("sha256:"):
            raise EngineError(f"podman push of {ref} to {destination} reported no digest.", _REGISTRY_FIX)
        return f"{repository}@{digest}"

    def pull_image(self, digest_ref: str, tag: str, tls_verify: bool = True) -> ImageInfo:
        if "@sha256:" not in digest_ref:
            raise EngineError(
                f"{digest_ref} names no digest (REPOSITORY@sha256:...).", "Pull images by their digest."
            )
        verify = f"--tls-verify={'true' if tls_verify else 'false'}"
        res = self._cmd("pull", "--quiet", verify, digest_ref, timeout=_TRANSFER_TIMEOUT, check=False)
        image_id = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if res.exit_code != 0 or not image_id:
            raise EngineError(f"podman pull of {digest_ref} failed: {_registry_error(res)}.", _REGISTRY_FIX)
        self._cmd("tag", image_id, tag)
        info = self.inspect_image(tag)
        if info is None:
            raise EngineError(f"podman pull finished but {tag} is missing.", _FIX)
        return info

    def remove_image(self, ref: str) -> None:
        res = self._cmd("rmi", ref, check=False)
        # Gone already, or still used by a container or a child image: not the caller's error.
        harmless = ("image not known", "image is in use", "has dependent children")
        if res.exit_code != 0 and not any(h in res.stderr for h in harmless):
            raise EngineError(f"podman rmi {ref} failed: {res.stderr.strip()}", _FIX)

    def untag_image(self, ref: str) -> None:
        res = self._cmd("untag", ref, check=False)
        if res.exit_code != 0 and "image not known" not in res.stderr:
            raise EngineError(f"podman untag {ref} failed: {res.stderr.strip()}", _FIX)

    def run_container(
        self,
        spec: ContainerSpec,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_exit: Callable[[ContainerExit], None] | None = None,
    ) -> ContainerExit:
        if spec.network is not Network.NONE:
            self.prepare()
        try:
            result = podman_run.run_container(self.binary, spec, on_stdout, on_stderr, timeout, should_stop)
        except FileNotFoundError:
            raise _absent(self.binary) from None
        if on_exit is not None:
            on_exit(result)
        return result

    def remove_containers(self, labels: Mapping[str, str]) -> int:
        args = ["ps", "-a"]
        for k, v in labels.items():
            args += ["--filter", f"label={k}={v}"]
        args += ["--format", "{{.ID}} {{.Names}}"]
        found = [line.split(" ", 1) for line in self._cmd(*args).stdout.splitlines() if " " in line]
        if found:
            self._cmd("rm", "-f", "-t", "0", *(cid for cid, _ in found), check=False)
            for _, name in found:
                podman_run.remove_cgroup_parent(name)
        return len(found)

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
        if network is not Network.NONE:
            self.prepare()
        args = ["run", "--rm", "--pull=never", "--cap-drop=all", "--security-opt=no-new-privileges"]
        args.append(f"--security-opt=seccomp={seccomp.podman_profile()}")
        args.append(f"--network={network.podman_name}")
        for k, v in sorted(labels.items()):
            args += ["--label", f"{k}={v}"]
        for k, v in sorted((env or {}).items()):
            args += ["--env", f"{k}={v}"]
        return self._cmd(*args, image, *argv, timeout=timeout, check=False)

    def start_container(self, spec: ContainerSpec, log_path: Path, log_max: int) -> str:
        if spec.network is not Network.NONE:
            self.prepare()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return self._cmd(*detached_args(spec, log_path, log_max), timeout=120).stdout.strip()

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        args = ["ps", "-a", "--format", "json"]
        for k, v in labels.items():
            args += ["--filter", f"label={k}={v}"]
        data = json.loads(self._cmd(*args).stdout or "[]")
        return [
            ContainerInfo(
                id=d["Id"],
                name=(d.get("Names") or [d["Id"][:12]])[0],
                state=str(d.get("State", "")),
                exit_code=int(d.get("ExitCode") or 0),
                labels=d.get("Labels") or {},
                started_at=float(d.get("StartedAt") or 0),
            )
            for d in data
        ]

    def container_address(self, name: str) -> str | None:
        # .NetworkSettings.IPAddress is filled for Podman's default network only.
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        res = self._cmd("inspect", "--type", "container", "--format", fmt, name, check=False)
        address = next(iter(res.stdout.split()), "")
        return address if res.exit_code == 0 and address else None

    def remove_build_leftovers(self, owner: str) -> int:
        # `podman build`s of the owner's still running (a stopped server's: none of the owner's
        # runs now), found by their owner argument, whatever the store still says of them.
        mine = _owned_by(owner)
        for pid in build_steps.orphans(mine, OWNER_ARG):
            log.warning("ending podman build %d, left running by a stopped server", pid)
            build_steps.kill_group(pid)
        # What their RUN steps run, by the steps' limits' cgroups (engine/build_limits.py).
        for name in build_limits.leftovers(owner):
            if killed := build_limits.end(name):
                log.warning("ended %d processes of a stopped build's RUN step (%s)", killed, name)
        # The build's temporary directory (its Containerfile, its context) that a SIGKILL left.
        for left in Path(tempfile.gettempdir()).glob(f"{_context_prefix(owner)}*"):
            shutil.rmtree(left, ignore_errors=True)
        found = self._end_builds(mine)
        _release_build_addresses()
        return found

    def _end_builds(self, owned: Callable[[str], bool]) -> int:
        """End what killed builds left, those whose owner argument `owned` accepts: their RUN
        steps' processes (which outlive `podman build`, see build_steps.py) and Buildah's working
        containers. Return how many containers."""
        # A SIGKILLed (or SIGTERMed) `podman build` leaves Buildah's working container behind:
        # unlabelled, shown only by `ps --external`; its build arguments are in its state file.
        listed = self._external_containers()
        working = [c for c in listed if c.get("Command") == ["buildah"]]
        if not working:  # the usual case: no `podman info` (a third of a second) needed
            return 0
        storage = self.storage()
        found = []
        for c in working:
            state = storage.root / f"{storage.driver}-containers" / c["Id"] / "userdata" / "buildah.json"
            try:
                build_args = json.loads(state.read_text()).get("Args") or {}
            except (OSError, ValueError):
                continue
            if owned(str(build_args.get(OWNER_ARG) or "")):
                found.append(c["Id"])
        if found:
            stopped = build_steps.steps(found)
            for step in stopped:
                killed = build_steps.end(step)
                if killed:
                    log.warning("ended %d processes of a stopped build's RUN step (%s)", killed, step.name)
            if stopped:
                with contextlib.suppress(EngineError):  # a network's files: a start sweeps them too
                    _release_build_addresses({build_steps.cgroup_name(step) for step in stopped})
            self._cmd("rm", "-f", *found, check=False)
        return len(found)

    def _external_containers(self) -> list[dict[str, Any]]:
        """`podman ps -a --external`. A build that ends while it lists (another server's, or
        another process's) makes it fail ("determining buildah container ...: container not
        known"): then it is asked again."""
        for attempt in range(5):
            res = self._cmd("ps", "-a", "--external", "--format", "json", check=attempt == 4)
            if res.exit_code == 0:
                return list(json.loads(res.stdout or "[]"))
            time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable: the last attempt raises")

    def remove_untagged_images(self, owner: str) -> int:
        # Podman's dangling images (no tag, no child image), never one that a container uses;
        # the layers under them go with them.
        owned = f"label=org.orch.instance={owner}"
        return len(self._cmd("image", "prune", "-f", "--filter", owned, check=False).stdout.split())

    def remove_leftovers(self, name_prefix: str) -> int:
        # Parent cgroups first, containers second: Podman records a container before its cgroups
        # exist, so a cgroup found first whose container is not listed after belongs to none.
        # (An rmdir of a cgroup with processes in it fails anyway.)
        parents = podman_run.cgroup_parents(name_prefix)
        if not parents:
            return 0
        names = set(self._cmd("ps", "-a", "--format", "{{.Names}}").stdout.split())
        stray = parents - names
        busy = {name for name in stray if not podman_run.remove_cgroup_parent(name, attempts=1)}
        # Processes in one: a container Podman let go of that runc still runs (or a sandbox of
        # a launcher's, which has a runtime root of its own and is left alone, and not counted).
        return len(stray - busy) + _end_outlived(busy)

    def remove_container(self, name: str, timeout: int = 10) -> None:
        # Stopped, then removed: a container whose stop was cut short (a server killed during a
        # service's 10 s stop) is `stopping` to Podman, and `podman rm -f` of it drops Podman's
        # record while the container runs on in runc, for good (Podman 4.3); `podman stop`
        # stops it for real. Whatever outlives the removal all the same is ended in the runtime.
        self._cmd("stop", "-t", str(timeout), name, timeout=timeout + 60, check=False)
        self._cmd("rm", "-f", "-t", "0", name, timeout=60, check=False)
        if not podman_run.remove_cgroup_parent(name):
            _end_outlived({name})


def detached_args(spec: ContainerSpec, log_path: Path, log_max: int) -> list[str]:
    """`podman run -d` for a service: the hardened arguments of a run, detached, its output kept
    in a k8s-file log at `log_path` (which conmon starts afresh at `log_max` bytes, so no output
    fills the disk), and the capabilities `spec.cap_add` names kept."""
    args = podman_run.run_args("podman", spec)[1:]
    args[args.index("-i")] = "-d"
    args[args.index("--log-driver=none")] = "--log-driver=k8s-file"
    args.insert(args.index("-d") + 1, f"--log-opt=path={log_path}")
    args.insert(args.index("-d") + 2, f"--log-opt=max-size={log_max}")
    at = args.index("--cap-drop=all") + 1
    args[at:at] = [f"--cap-add={cap}" for cap in spec.cap_add]
    return args


def _end_outlived(names: set[str]) -> int:
    """End the containers of Podman's runtime that outlived Podman's record of them, among those
    named `names` (whose parent cgroups still hold processes): runc's containers in their parent
    cgroups are killed and deleted, then the cgroups removed. Return how many containers."""
    parents = {podman_run.cgroup_parent(name).lstrip("/"): name for name in names}
    ended = 0
    for parent, ids in runtime_state.in_cgroups(set(parents)).items():
        name = parents[parent]
        for cid in ids:
            log.warning("ending container %s (%s): Podman let go of it, runc ran it on", name, cid[:12])
            ended += runtime_state.delete(cid)
        podman_run.remove_cgroup_parent(name)  # its conmon goes once the container has
    return ended


def _tail(res: ProcessResult) -> str:
    """The last lines of what a failed podman command said, on one line."""
    return " ".join((res.stderr or res.stdout).strip().splitlines()[-3:]) or f"exit code {res.exit_code}"


def _registry_error(res: ProcessResult) -> str:
    """Why a push or a pull failed, as one clause. Podman says it on its last line, `Error: ` and
    a chain of errors, after a warning for each of its retries that repeats it: that line alone.
    When the registry did not answer, the chain is mostly where it stopped ("trying to reuse blob
    sha256:...: pinging container registry H: Get "http://H/v2/": dial tcp H: connect: connection
    refused"): the registry's address and the chain's last link (connection refused, no such
    host, a certificate's error) say it."""
    errors = [line for line in (res.stderr or res.stdout).splitlines() if line.startswith("Error: ")]
    said = errors[-1].removeprefix("Error: ").strip() if errors else ""
    if not said:
        return _tail(res).rstrip(".")
    unreachable = _UNREACHABLE.search(said)
    if unreachable:
        why = unreachable[2].rsplit(": ", 1)[-1]
        return f"the registry at {unreachable[1]} could not be reached ({why})"
    return said.rstrip(".")


def _image_info(d: dict[str, Any]) -> ImageInfo:
    labels = (d.get("Config") or {}).get("Labels") or d.get("Labels") or {}
    return ImageInfo(
        id=d["Id"], size=int(d.get("Size", 0)), labels=labels, tags=tuple(d.get("RepoTags") or ())
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


_TIMEOUT, _STOPPED = "timeout", "stopped"
_WATCH_EVERY = 1.0  # seconds between two questions to `should_stop`


def _watch(
    pid: int,
    done: threading.Event,
    why: list[str | build_disk.Stop],
    timeout: float | None,
    should_stop: Callable[[], bool] | None,
    disk: Callable[[], build_disk.Stop | None] | None = None,
) -> None:
    """Kill the build `pid` (its process group) at its timeout, once `should_stop` says so, or
    once `disk` returns a Stop (its steps wrote too much, or the disk is nearly full); say which
    in `why`. Ends when `done` is set."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = _WATCH_EVERY if deadline is None else min(_WATCH_EVERY, deadline - time.monotonic())
        if done.wait(max(wait, 0)):
            return
        if deadline is not None and time.monotonic() >= deadline:
            why.append(_TIMEOUT)
            break
        try:
            stop = should_stop is not None and should_stop()
        except Exception:  # the store is away for a moment: the build goes on
            log.exception("asking whether a build should stop")
            stop = False
        if stop:
            why.append(_STOPPED)
            break
        try:
            full = disk() if disk is not None else None
        except Exception:  # the storage's files changing under the walk: measured again next time
            log.exception("measuring what a build wrote")
            full = None
        if full is not None:
            why.append(full)
            break
    _kill_group(pid)


def _owned_by(owner: str) -> Callable[[str], bool]:
    """Whether a build's owner argument is one of `owner`'s builds (`owner/NONCE`, or `owner`
    alone as builds before the nonce had it)."""
    return lambda value: value == owner or value.startswith(f"{owner}/")
