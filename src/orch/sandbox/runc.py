"""Running one sandbox with the OCI runtime itself (runc), without Podman in the way.

A run is `runc run --bundle DIR ID` in the foreground: runc hands its stdin/stdout/stderr
pipes to the sandbox's process (no terminal, no --detach) and exits with its status. The bundle
holds a generated config.json (see `oci`), whose root is an overlay over the image's mounted
root with its upper layer on a sized tmpfs (see `rootfs`); the network namespace is a new empty
one, or a prepared one on the sandbox bridge (see `netns`). PID 1 is catatonit, bound in as
`podman --init` does, so zombies are reaped and signals reach the command.

Same contract as `orch.engine.podman_run.run_container`: output streamed, a timeout or a
cancel kills the sandbox, an OOM kill is reported as such, everything is removed afterwards,
also on errors. `sweep(prefix)` removes what a killed server left.

The runtime is a parameter: gVisor's runsc can take runc's place. It gets the same bundle, but
its network must be given differently: with a prepared namespace it runs inside it
(`nsenter --net=PATH runsc --network=host ...`, the config's network entry removed), without
one `--network=none`. (runsc's own netstack refuses to start on these machines.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.network import Network
from orch.engine.podman import PodmanEngine

# Shared with the Podman path: the same OOM reading and cgroup parent.
from orch.engine.podman_run import (
    CGROUP_ROOT,
    _peak_reached_limit,
    _pids_reached_limit,
    cgroup_parent,
    cgroup_parents,
    remove_cgroup_parent,
)
from orch.errors import EngineError
from orch.sandbox import etc_files, handoff, netns, oci, relay, rootfs, sealed, volatile
from orch.sandbox import spec as spec_mod
from orch.sandbox.launcher import Isolation, sweep_all
from orch.sandbox.layout import SCRATCH
from orch.sandbox.pump import Pump
from orch.sandbox.warm import Pool as WarmPool

log = logging.getLogger(__name__)
STATE = Path("/run/orch-runc")
CATATONIT = (Path("/usr/libexec/podman/catatonit"), Path("/usr/bin/catatonit"))
READ_ONLY_LAYER = 4 * 1024 * 1024  # a read-only root's upper layer holds only mount points
GVISOR_THREADS = 256  # room in a gVisor sandbox's pids cgroup for the Sentry's own threads
FOR = "for"  # in a warm sandbox's bundle: the name of the run's sandbox it serves
# A warm sandbox starts at a lower priority, so that it takes no CPU from the runs under way
# (it starts while the run that wanted it runs); it gets the normal priority at the handover.
WARM_NICE = 10
ENGINE_FAILED = 125  # as `podman run` exits when the engine itself fails to start the sandbox
_FIX = "Run scripts/setup (it installs runc, catatonit and Podman), run the server as root, then try again."


def remove_tree(path: Path, attempts: int = 5) -> None:
    """`shutil.rmtree(path)`, tolerating files that vanish under it: a held sandbox's commands,
    killed as it is removed, unlink their own files in its bundle meanwhile (a FileNotFoundError
    stopped the removal half-way, leaving the bundle). A directory still not empty (a file made
    meanwhile) is tried again; OSError when it stays."""

    def vanished(_func: Callable[..., object], _path: str, info: Any) -> None:
        if not isinstance(info[1], FileNotFoundError):
            raise info[1]

    for attempt in range(attempts):
        try:
            shutil.rmtree(path, onerror=vanished)
            return
        except OSError:
            if not os.path.lexists(path):
                return
            if attempt == attempts - 1:
                raise


def sandbox_cgroup(name: str, controller: str) -> Path:
    """The directory of sandbox `name`'s own cgroup (below its parent, `cgroup_parent`) for
    `controller`: its hierarchy's on cgroup v1, the unified one on v2."""
    where = f"{cgroup_parent(name)}/{name}".lstrip("/")
    own = CGROUP_ROOT / controller / where
    return own if own.is_dir() else CGROUP_ROOT / where


def _kill_cgroup(folder: Path) -> None:
    """SIGKILL every process in the cgroup `folder` (none: gone already)."""
    try:
        pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def unreadable_copy(binary: Path, state: Path) -> Path:
    """A copy of `binary` under `state` that only root may read, executable by all (mode 0111),
    made once per version of it (named after its inode, size and time). Whoever executes a file
    they cannot read runs non-dumpable (the kernel's rule for such files), and a non-dumpable
    process cannot be ptrace-attached without CAP_SYS_PTRACE: the sandbox's init, run from this
    copy, cannot be stopped by its agent (an agent that attached to it and exited left the sandbox
    running until its timeout). What the init starts execs its own files and stays traceable."""
    st = binary.stat()
    stamp = hashlib.sha256(f"{binary.resolve()}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode())
    path = state / f"init-{stamp.hexdigest()[:16]}"
    if path.exists():
        return path
    state.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
    shutil.copyfile(binary, partial)
    partial.chmod(0o111)
    os.replace(partial, path)
    return path


def writable_bytes(spec: ContainerSpec) -> int:
    """Size of a writable root's upper layer (its pages count against the memory limit too)."""
    if spec.memory_bytes:
        return max(spec.memory_bytes // 2, 16 * 1024 * 1024)
    return 1024**3


def hostname(name: str) -> str:
    """12 hex digits, like Podman's short container id: the name itself stays outside."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


@dataclass
class Launcher:
    """Starts sandboxes with `runtime`. One per server: it keeps the image roots it mounted
    and a pool of network namespaces per network, named after `prefix` (the owner's)."""

    runtime: str = "runc"
    prefix: str = "orch-"
    podman: str = "podman"
    state: Path = STATE
    pool_size: int = 2
    warm: int = 0  # sandboxes started ahead of need for recent runs' keys (see sandbox/warm.py)
    images: rootfs.Images = field(init=False)
    _pools: dict[str, netns.Pool] = field(default_factory=dict, init=False)
    _held: set[str] = field(default_factory=set, init=False)  # the image ids this launcher holds
    _uses: dict[str, str] = field(default_factory=dict, init=False)  # sandbox name -> its image id
    _tagged: tuple[int, set[str]] = field(default=(0, set()), init=False)  # (stamp, ids with a name)
    _releasing: set[str] = field(default_factory=set, init=False)  # image ids let go, being removed
    _removals: list[threading.Thread] = field(default_factory=list, init=False)  # of images let go
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _warm: WarmPool[_Warm, ContainerSpec] | None = field(default=None, init=False)
    _helper: Path | None = field(default=None, init=False)
    _relay: Path | None = field(default=None, init=False)
    _no_relay: bool = field(default=False, init=False)  # relay.Unavailable said once

    def __post_init__(self) -> None:
        self.images = rootfs.Images(self.podman)

    @property
    def gvisor(self) -> bool:
        return Path(self.runtime).name == "runsc"

    @property
    def runtime_root(self) -> Path:
        return self.state / Path(self.runtime).name  # runc and runsc keep their state apart

    def pool(self, network: Network) -> netns.Pool:
        with self._lock:
            if network.podman_name not in self._pools:
                state_dir = self.state / "netns"
                self._pools[network.podman_name] = netns.Pool(
                    network.podman_name, self.prefix, self.pool_size, state_dir
                )
            return self._pools[network.podman_name]

    def wait(self) -> None:
        """Until the background work is done (warm sandboxes started, used namespaces destroyed,
        images let go removed)."""
        with self._lock:
            waiting = self._warm
        if waiting is not None:
            waiting.wait()
        with self._lock:
            pools, removals = list(self._pools.values()), list(self._removals)
        for pool in pools:
            pool.wait()
        for removal in removals:
            removal.join()

    def close(self) -> None:
        """Destroy the pools' namespaces (a server stop), used and ready ones, and let go of the
        images this launcher held."""
        with self._lock:
            waiting, self._warm = self._warm, None
        if waiting is not None:
            waiting.close()  # before the namespaces: the waiting sandboxes hold some
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            self._held.clear()
        for pool in pools:
            pool.close()
        # The holders only: a sandbox may run still (the stop kills them after). The images
        # that lost their name go at the next start (workers/builds.py, before anything runs).
        self._remove_holders(self.prefix)

    def image_id(self, ref: str) -> str:
        return self.images.get(ref).id

    def _hold(self, image_id: str) -> None:
        """Keep Podman from removing an image whose root sandboxes use: Podman knows nothing of
        them, and a rebuild that moves a tag removes the image it named unless a container uses
        it. A created (never started) container does; the image then goes at the next start."""
        with self._lock:
            if image_id in self._held:
                return
            self._held.add(image_id)
        name = self._holder(image_id)
        args = ["create", "--pull=never", "--name", name, "--label", "org.orch.kind=hold", image_id, "true"]
        res = subprocess.run([self.podman, *args], capture_output=True, text=True, check=False)
        if res.returncode != 0 and "already in use" not in res.stderr:
            log.warning("holding image %s: %s", image_id[:12], res.stderr.strip())

    def _use(self, spec: ContainerSpec) -> rootfs.Image:
        """`spec`'s image, counted as used by its sandbox until `teardown`. One being removed
        (a let-go decided so between the lookup and the count) is looked up again:
        its tag names another image by now."""
        for _ in range(2):
            image = self.images.get(spec.image)
            with self._lock:
                if image.id not in self._releasing:
                    self._uses[spec.name] = image.id
                    return image
        raise EngineError(f"The image {spec.image} was removed.", "Build it again, then try again.")

    def _holder(self, image_id: str) -> str:
        # One per runtime: the launchers of one server share their prefix, and each lets go of
        # its own holds.
        return f"{self.prefix}hold-{Path(self.runtime).name}-{image_id[:12]}"

    def let_go(self) -> None:
        """Let go of the images held for sandboxes that no longer have a name and that no
        sandbox of this launcher uses now, and remove them before returning: called after an
        environment's delete, whose own removal of its image was refused while it was held (it
        only took the name). Without it, an idle server kept such an image, and its holder, until
        some other sandbox ended (found by a tester). One a sandbox uses goes when it ends; the
        warm sandboxes of such an image, which no run could be handed, are removed first."""
        with self._lock:
            pool = self._warm
        tagged = self.images.tagged() if pool is not None else None
        if pool is not None and tagged is not None:  # a warm key starts with its image's id
            pool.forget(lambda key: key.partition(" ")[0] not in tagged)
            with self._lock:  # their teardown let go of the image in the background: done here
                removals = list(self._removals)
            for removal in removals:
                removal.join()
        for image_id in self._untagged_idle(fresh=True):
            self._remove_image(image_id)

    def _let_go_of_untagged(self) -> None:
        """Let go of the images held for sandboxes that no longer have a name (a rebuild moved
        their tag, an environment's delete took it) once no sandbox of this launcher uses them,
        and remove them, in the background: the rebuild's own removal of the old image was
        refused while it was held. Checked as each sandbox is torn down; it costs a stat unless
        Podman's list of images changed."""
        for image_id in self._untagged_idle():
            removal = threading.Thread(target=self._remove_image, args=(image_id,), daemon=True)
            removal.start()
            with self._lock:
                self._removals = [t for t in self._removals if t.is_alive()] + [removal]

    def _untagged_idle(self, fresh: bool = False) -> set[str]:
        """The held images that have no name and that no sandbox uses, taken out of `_held` into
        `_releasing` for the caller to remove. `fresh`: Podman's list read whatever its stamp
        (a change within the stamp's granularity does not hide an untag just made)."""
        with self._lock:
            if not self._held - set(self._uses.values()):
                return set()  # nothing idle: not even a stat
        stamp = self.images.stamp()
        with self._lock:
            known, tagged = self._tagged
            idle = self._held - set(self._uses.values())
            if known == stamp and not fresh:
                idle -= tagged
        if not idle:
            return set()
        if known != stamp or fresh:
            found = self.images.tagged()
            if found is None:
                return set()
            tagged = found
        with self._lock:
            self._tagged = (stamp, tagged)
            gone = idle - tagged - set(self._uses.values())
            self._held -= gone
            self._releasing |= gone
        return gone

    def _remove_image(self, image_id: str) -> None:
        """Remove this launcher's holder of an image, then the image (refused while another
        holder, another server's or runtime's, or a container of Podman's still uses it)."""
        try:
            holder = self._holder(image_id)
            subprocess.run([self.podman, "rm", "-f", holder], capture_output=True, check=False)
            PodmanEngine(self.podman).remove_image(image_id)  # in use elsewhere, or gone: fine
        except EngineError as e:
            log.warning("removing the untagged image %s: %s", image_id[:12], e.message)
        finally:
            with self._lock:
                self._releasing.discard(image_id)

    def _holders(self, prefix: str) -> dict[str, str]:
        """The holders of sandboxes named `prefix`... (every runtime's): name -> image id."""
        shown = "{{.Names}} {{.ImageID}}"
        args = ["ps", "-a", "--no-trunc", "--filter", f"name=^{prefix}hold-", "--format", shown]
        listed = subprocess.run(
            [self.podman, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        pairs = (line.split() for line in listed.stdout.splitlines())
        return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}

    def _remove_holders(self, prefix: str) -> dict[str, str]:
        """Remove the holders of sandboxes named `prefix`...; return them (name -> image id)."""
        holders = self._holders(prefix)
        if holders:
            subprocess.run([self.podman, "rm", "-f", *holders], capture_output=True, check=False)
        return holders

    def _release_holds(self, prefix: str) -> int:
        """Remove the holders of sandboxes named `prefix`..., and the images they held that have
        no name (an environment deleted, a rebuild, while they were held); return how many
        holders. Only once every sandbox of `prefix` is gone (`sweep`): an image removed under a
        running sandbox empties its root. A killed server's holders are found by the next start's
        sweep, after that start's removal of the unnamed images (workers/builds.py), which skips
        held ones: without this, those stayed until the start after."""
        holders = self._remove_holders(prefix)
        try:
            tagged = self.images.tagged() if holders else None
        except EngineError as e:  # storage only: nothing here is worth failing a start for
            log.warning("listing the images with a name: %s", e.message)
            tagged = None
        for image_id in set() if tagged is None else set(holders.values()) - tagged:
            try:
                PodmanEngine(self.podman).remove_image(image_id)  # another's holder: refused, fine
            except EngineError as e:
                log.warning("removing the untagged image %s: %s", image_id[:12], e.message)
        return len(holders)

    def run_container(
        self,
        spec: ContainerSpec,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_exit: Callable[[ContainerExit], None] | None = None,
    ) -> ContainerExit:
        began = time.monotonic()
        pool = self._warm_pool()
        if pool is not None:
            key = self._key(spec)
            taken = pool.take(key)
            given = on_exit

            def on_exit(result: ContainerExit) -> None:
                if given is not None:
                    given(result)
                # The next run with this key finds one waiting. Started once this one has
                # exited: the server's threads share one interpreter, and the start's own
                # Python would slow this run's.
                pool.want(key, spec)

            if taken is not None:
                return self._run_warm(taken, spec, on_stdout, on_stderr, timeout, should_stop, began, on_exit)
        bundle = self.state / "sandboxes" / spec.name
        _private(self.state)
        if bundle.exists():
            self.teardown(spec.name)  # the same name's leftover: its owner is gone
        ns = netns.EMPTY
        clock = _Clock()
        try:
            if spec.network is not Network.NONE:
                ns = self.pool(spec.network).acquire()
            self.prepare(spec, bundle, ns)
            clock.prepared = time.monotonic()
            proc = self._start(spec, bundle, ns)
            result = self._follow(
                proc, spec, bundle, spec.stdin, on_stdout, on_stderr, timeout, should_stop, clock
            )
            if on_exit is not None:
                on_exit(result)
        finally:
            self._remove(spec.name, ns, spec.network)
        return dataclasses.replace(result, timings=clock.timings(began, time.monotonic()))

    def _run_warm(
        self,
        sandbox: _Warm,
        spec: ContainerSpec,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None,
        should_stop: Callable[[], bool] | None,
        began: float,
        on_exit: Callable[[ContainerExit], None] | None,
    ) -> ContainerExit:
        """Hand `spec`'s command, environment and input to a waiting sandbox and follow it as a
        cold one. It keeps its own name; its bundle says whose run it serves (`for`)."""
        handed = time.monotonic()
        clock = _Clock(prepared=handed, running=handed)  # it runs: only the handing is left
        own = dataclasses.replace(spec, name=sandbox.name)
        try:
            (sandbox.bundle / FOR).write_text(spec.name)
            for m in spec.mounts:
                if m.late and m.container in sandbox.layout.late:
                    rootfs.attach(Path(m.host), sandbox.layout.late[m.container], m.read_only)
            _renice_tree(sandbox.proc.pid, 0)
            env = oci.environment(spec, sandbox.layout)
            # A run's bundle is copied by the helper itself: `cp` is one exec less (tens of ms
            # under gVisor).
            copy, argv = spec_mod.without_copy(spec.argv) or (None, spec.argv)
            try:
                stdin = handoff.message(argv, env, copy) + spec.stdin
            except ValueError:
                raise EngineError(
                    "The sandbox's command or environment holds a NUL byte.", "Remove it, then try again."
                ) from None
            result = self._follow(
                sandbox.proc, own, sandbox.bundle, stdin, on_stdout, on_stderr, timeout, should_stop, clock
            )
            if on_exit is not None:
                on_exit(result)
        finally:
            self._remove(sandbox.name, sandbox.ns, sandbox.network)
        return dataclasses.replace(result, timings=clock.timings(began, time.monotonic()), warm=True)

    def _warm_pool(self) -> WarmPool[_Warm, ContainerSpec] | None:
        """The pool of waiting sandboxes; None when `warm` is 0 or its helper can't be built."""
        if self.warm <= 0:
            return None
        with self._lock:
            if self._warm is not None:
                return self._warm
        try:
            helper = handoff.binary(self.state)
        except handoff.Unavailable as e:
            log.warning("sandboxes start cold, none ahead of need: %s (scripts/setup installs gcc)", e)
            self.warm = 0
            return None
        with self._lock:
            if self._warm is None:
                self._helper = helper
                self._warm = WarmPool(self._start_warm, self._discard_warm, _alive, self.warm)
            return self._warm

    def _key(self, spec: ContainerSpec) -> str:
        """What a waiting sandbox must match to serve `spec`: everything but its name, labels,
        command, environment and input; the image by its id (a rebuilt tag is another key)."""
        # Under runc a run's late mounts (its bundle, its dependencies) are attached at the
        # handover, so agents on one environment share a key; gVisor's gofer serves a mount from
        # what it opened at the start, so there they are part of the key.
        mounts = tuple(
            dataclasses.replace(m, host="") if m.late and not self.gvisor else m for m in spec.mounts
        )
        shape = dataclasses.replace(spec, name="", labels={}, env={}, argv=(), stdin=b"", mounts=mounts)
        return f"{self.images.get(spec.image).id} {shape!r}"  # the id first: let_go reads it

    def _start_warm(self, key: str, template: ContainerSpec) -> _Warm:
        name = f"{self.prefix}warm-{secrets.token_hex(6)}"
        assert self._helper is not None
        spec = dataclasses.replace(template, name=name, env={}, argv=[oci.HANDOFF], stdin=b"")
        bundle = self.state / "sandboxes" / name
        _private(self.state)
        ns = netns.EMPTY
        try:
            if spec.network is not Network.NONE:
                ns = self.pool(spec.network).acquire()
            layout = self.prepare(spec, bundle, ns, helper=self._helper)
            proc = self._start(spec, bundle, ns, nice=WARM_NICE)
            return _Warm(name, bundle, ns, spec.network, layout, proc)
        except BaseException:
            self._remove(name, ns, spec.network)
            raise

    def _discard_warm(self, sandbox: _Warm) -> None:
        """Remove a waiting sandbox never handed a run: its helper ends at the end of its input."""
        proc = sandbox.proc
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            self._kill(sandbox.name)
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self._remove(sandbox.name, sandbox.ns, sandbox.network)

    def _remove(self, name: str, ns: netns.Netns, network: Network) -> None:
        """`teardown` a sandbox and give its network namespace back to the pool. A cleanup that
        fails does not change a run's outcome (as on the Podman path): it is logged, and what
        stays behind is found by sweep()."""
        if problems := self.teardown(name):
            log.warning("%s", problems)
        if ns.name:
            self.pool(network).release(ns)

    def prepare(
        self, spec: ContainerSpec, bundle: Path, ns: netns.Netns, helper: Path | None = None
    ) -> oci.Layout:
        """Make `spec`'s bundle in `bundle`: its root, /etc files and config.json (run, warm and
        held sandboxes alike; `teardown` removes it all). `helper`: the handoff helper, bound in
        for a warm sandbox to wait in; under runc the spec's late mounts then get empty places,
        filled at the handover (`_run_warm`). Return the layout it made."""
        init = next((p for p in CATATONIT if p.exists()), None)
        if init is None:
            raise EngineError("catatonit (the sandbox's init) is not installed.", _FIX)
        if not self.gvisor:
            init = unreadable_copy(init, self.state)
        image = self._use(spec)
        self._hold(image.id)
        passwd, group = image.passwd, image.group
        uid, gid = oci.parse_user(spec.user or image.user or "0", passwd, group)
        bundle.mkdir(parents=True, mode=0o700)
        writable = not spec.read_only
        root = rootfs.mount_root(
            image.root,
            bundle,
            writable_bytes(spec) if writable else READ_ONLY_LAYER,
            chown_home=(uid, gid) if writable and uid != 0 else None,
        )
        late: dict[str, Path] = {}
        if helper is not None and not self.gvisor:
            for i, m in enumerate(m for m in spec.mounts if m.late):
                late[m.container] = bundle / "late" / str(i)
                rootfs.shared_point(late[m.container])
        # runsc mounts a tmpfs of its own on a /tmp the config leaves out (when the root's is empty
        # or missing): unbounded, outside the root's disk. The root's own /tmp bound there keeps
        # it on that disk, as under runc: a full disk is ENOSPC, not a sandbox killed for memory.
        own = {m.container for m in spec.mounts} | set(spec.tmpfs)
        tmp = rootfs.own_tmp(root.path) if self.gvisor and SCRATCH not in own else None
        name = hostname(spec.name)
        files = etc_files.write(
            bundle,
            hostname=name,
            name=spec.name,
            address=ns.address,
            gateway=ns.gateway,
            network=ns.path is not None,
            uid=uid,
            gid=gid,
            home=spec.workdir or image.workdir or "/",
            passwd=passwd,
            group=group,
        )
        layout = oci.Layout(
            root=root.path,
            hostname=name,
            cgroups_path=f"{cgroup_parent(spec.name)}/{spec.name}",
            uid=uid,
            gid=gid,
            netns=ns.path,
            files=files,
            init=init,
            image_env=image.env,
            image_workdir=image.workdir,
            rlimits=oci.podman_rlimits(),
            handoff=helper,
            late=late,
            tmp=tmp,
            relay=self._output_relay() if self.gvisor else None,
        )
        config = oci.config(spec, layout)
        if self.gvisor:
            _for_gvisor(config)
        (bundle / "config.json").write_text(json.dumps(config))
        return layout

    def _output_relay(self) -> Path | None:
        """The relay a gVisor sandbox's command writes its output through (see sandbox/relay.py),
        built the first time; None (and a warning, once) when it cannot be built here."""
        with self._lock:
            if self._relay is not None or self._no_relay:
                return self._relay
        try:
            built = relay.binary(self.state)
        except relay.Unavailable as e:
            log.warning(
                "gVisor sandboxes write their output without the relay: %s; a single write of more than "
                "64 KiB may then be cut short (scripts/setup installs gcc)",
                e,
            )
            with self._lock:
                self._no_relay = True
            return None
        with self._lock:
            self._relay = built
        return built

    def base(self, ns: netns.Netns | None = None) -> list[str]:
        """The runtime's command line up to its subcommand: runc from its sealed in-memory copy
        (see `sealed`), runsc (which re-executes itself its own way) from its file, with the
        network flag of a sandbox in `ns` (runsc's commands on a sandbox repeat its start's)."""
        if not self.gvisor:
            return [sealed.executable(self.runtime), "--root", str(self.runtime_root)]
        base = [self.runtime, "--root", str(self.runtime_root)]
        if ns is not None:
            base.append("--network=host" if ns.path else "--network=none")
        return base

    def _command(self, spec: ContainerSpec, bundle: Path, ns: netns.Netns) -> list[str]:
        base = self.base(ns)
        run = [*base, "run", "--bundle", str(bundle), "--pid-file", str(bundle / "pid"), spec.name]
        if self.gvisor and ns.path:
            return ["nsenter", f"--net={ns.path}", *run]
        return run

    def _start(
        self, spec: ContainerSpec, bundle: Path, ns: netns.Netns, nice: int = 0
    ) -> subprocess.Popen[bytes]:
        """The runtime running the bundle in the foreground, its stdio our pipes; with `nice`, it
        and everything it starts at that lower priority: a new process takes the priority of the
        thread that starts it, so this thread takes `nice` for the start (no `nice` process)."""
        command = self._command(spec, bundle, ns)
        thread = threading.get_native_id()
        if nice:
            own = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, nice)
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=bundle,
            )
        except FileNotFoundError:
            raise EngineError(f"The OCI runtime {self.runtime} is not installed.", _FIX) from None
        finally:
            if nice:
                os.setpriority(os.PRIO_PROCESS, thread, own)  # back (root may raise a priority)

    def _follow(
        self,
        proc: subprocess.Popen[bytes],
        spec: ContainerSpec,
        bundle: Path,
        stdin: bytes,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None,
        should_stop: Callable[[], bool] | None,
        clock: _Clock,
    ) -> ContainerExit:
        """Feed `stdin`, stream the output, enforce the timeout and cancels, until it ends: all
        in this thread (see `pump`)."""
        pid_file = bundle / "pid"
        streams = Pump(proc, stdin, on_stdout, on_stderr, pid_file)
        why = ""
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            why = streams.run(deadline, should_stop, kill=lambda: self._kill(spec.name))
        finally:
            if proc.poll() is None:
                # Unwound (the caller's thread was interrupted): the container goes in teardown.
                self._kill(spec.name)
                proc.kill()
                proc.wait()
            streams.close()
        clock.exited = time.monotonic()
        clock.running = clock.running or streams.started or (clock.exited if pid_file.exists() else 0.0)
        code = proc.returncode
        if code < 0:  # the runtime itself killed (it hung after a kill): as a shell says a signal
            code = 128 - code
        if code != 0 and not why and not pid_file.exists():
            code = ENGINE_FAILED  # the sandbox never ran: the runtime's own failure
        # An OOM kill is a SIGKILL (137); only then is it worth asking. Under gVisor the kill
        # may hit its kernel (the Sentry) rather than the agent, and runsc then exits 1.
        killed = code == 137 or (self.gvisor and code == 1)
        oom = killed and not why and _peak_reached_limit(spec)
        # Whether a fork or thread was refused, from the cgroup's counters too, never from what
        # the sandbox wrote. Under gVisor they count the Sentry's threads (its cgroup's limit is
        # GVISOR_THREADS higher), not the agent's processes, whose RLIMIT_NPROC gVisor's own
        # kernel enforces: no counter of the host's shows that limit reached.
        limit = spec.pids + GVISOR_THREADS if self.gvisor and spec.pids else spec.pids
        pids = code != 0 and not why and not oom and _pids_reached_limit(spec.name, limit)
        return ContainerExit(
            exit_code=code,
            oom_killed=oom,
            timed_out=why == "timeout",
            cancelled=why == "cancel",
            pids_limit_reached=pids,
        )

    def _runtime(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.base(), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise EngineError(f"The OCI runtime {self.runtime} is not installed.", _FIX) from None
        except subprocess.TimeoutExpired:
            raise EngineError(f"{self.runtime} {args[0]} did not finish in {timeout:.0f} s.", _FIX) from None

    def _kill(self, name: str) -> None:
        if self.gvisor:
            # runsc asks its sandbox's kernel (the Sentry) to kill the agent, and the Sentry runs
            # under the sandbox's CPU limit: at `cpus: 0.01` that took 10 s and more. The Sentry
            # and the gofer are the host's processes in the sandbox's cgroup: killed there, the
            # sandbox ends at once, as runc's does.
            _kill_cgroup(sandbox_cgroup(name, "pids"))
        # PID 1 of the sandbox's pid namespace: the kernel then kills every process in it.
        self._runtime("kill", name, "KILL")

    def _has_state(self, name: str) -> bool:
        # runc keeps a directory per container; other runtimes are asked in any case.
        return (self.runtime_root / name).exists() if not self.gvisor else self.runtime_root.exists()

    def _kept(self, name: str) -> bool:
        """Whether the runtime still has container `name` after its delete failed. runsc's
        delete can fail on what the sandbox took with it already (after a killed server, its
        filestore file under the root: "failed to delete filestore file ... no such file or
        directory") once it has removed the container: nothing is left then, so nothing to say."""
        if not self.gvisor:
            return self._has_state(name)
        try:
            return name in self.containers(name)
        except EngineError:
            return True

    def containers(self, prefix: str) -> list[str]:
        """Ids of the runtime's containers (any state) that begin with `prefix`."""
        if not self.runtime_root.exists():
            return []
        res = self._runtime("list", "--format", "json")
        listed: list[dict[str, Any]] = json.loads(res.stdout or "null") or []
        return [str(c["id"]) for c in listed if str(c.get("id", "")).startswith(prefix)]

    def teardown(self, name: str) -> str:
        """Remove everything of one sandbox but its network namespace (the pool's), each step
        tried even when one before failed: the runtime's container, the root's mounts, the
        bundle, the cgroups. The mounts go before the cgroups: a tmpfs's pages stay charged to
        the sandbox until then. Return what could not be removed ("" when clean)."""
        errors: list[str] = []
        bundle = self.state / "sandboxes" / name
        if self._has_state(name):
            res = self._runtime("delete", "--force", name)
            if res.returncode != 0 and self._kept(name) and "does not exist" not in res.stderr:
                errors.append(f"{self.runtime} delete {name}: {res.stderr.strip()}")
        try:
            for point in rootfs.mounts_under(bundle):
                rootfs.umount(point)
            if bundle.exists():
                rootfs.unmount_root(bundle)
                remove_tree(bundle)
        except (EngineError, OSError) as e:
            errors.append(str(e))
        remove_cgroup_parent(name)
        with self._lock:
            used = self._uses.pop(name, None)
        if used is not None:
            self._let_go_of_untagged()
        return f"The sandbox {name} was not cleaned up fully: {'; '.join(errors)}" if errors else ""

    def kill(self, prefix: str) -> list[str]:
        """Kill this runtime's sandboxes named `prefix`...; return the names of all of them."""
        names = self.containers(prefix)
        for name in names:
            with contextlib.suppress(EngineError):
                self._kill(name)
        return names

    def sweep(self, prefix: str) -> int:
        """Remove what sandboxes named `prefix`... left after a killed server: the runtime's
        containers, mounted roots, bundles, network namespaces (and their addresses and rules),
        cgroups. Call it only while the owner runs no sandbox, and through `launcher.sweep_all` when
        the owner has more than one runtime: the runtimes share the directory of bundles, so
        this also finds their sandboxes, which only their own runtime can kill. Return how many
        were found."""
        names = set(self.kill(prefix))
        sandboxes = self.state / "sandboxes"
        if sandboxes.is_dir():
            names |= {p.name for p in sandboxes.glob(f"{prefix}*")}
        for name in names:
            if problems := self.teardown(name):
                log.warning("%s", problems)
        swept = netns.sweep(prefix, Network.SANDBOX.podman_name, self.state / "netns")
        swept += netns.sweep(prefix, Network.SERVICE.podman_name, self.state / "netns")
        # Services' containers (Podman's, `PREFIXsvc_…`: services/reconcile.py) have parent
        # cgroups of the same form, live ones too: not the launcher's (a start counted each
        # service's twice as a stopped server's leftover, and tried to remove its cgroup).
        stray = {n for n in cgroup_parents(prefix) - names if not n.removeprefix(prefix).startswith("svc_")}
        for name in stray:
            remove_cgroup_parent(name, attempts=1)
        return len(names) + len(stray) + swept + self._release_holds(prefix)


@dataclass
class _Warm:
    """A sandbox started ahead of need, its helper waiting for a run on its standard input."""

    name: str
    bundle: Path
    ns: netns.Netns
    network: Network
    layout: oci.Layout
    proc: subprocess.Popen[bytes]


def _alive(sandbox: _Warm) -> bool:
    return sandbox.proc.poll() is None


def _renice_tree(pid: int, nice: int) -> None:
    """Give every thread of `pid` and of all its descendants the priority `nice` (a thread's
    priority is its own on Linux). The sandbox's processes are the runtime's descendants."""
    todo = [pid]
    while todo:
        current = todo.pop()
        tasks = Path(f"/proc/{current}/task")
        try:
            tids = [int(t.name) for t in tasks.iterdir()]
        except OSError:
            continue  # gone meanwhile
        for tid in tids:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in (tasks / str(tid) / "children").read_text().split()]


@dataclass
class _Clock:
    """When each phase of one sandbox ended (time.monotonic(); 0.0: not reached)."""

    prepared: float = 0.0
    running: float = 0.0
    exited: float = 0.0

    def timings(self, began: float, cleaned: float) -> dict[str, float]:
        if not (self.prepared and self.exited):
            return {}
        running = self.running or self.exited
        return {
            "prepare": self.prepared - began,
            "start": running - self.prepared,
            "run": self.exited - running,
            "exit": cleaned - self.exited,
        }


def _private(state: Path) -> None:
    # A bundle's config holds the run's environment (its secrets too): root's eyes only, as
    # Podman keeps its containers' (overlay-containers/ is 0700).
    if state == STATE:
        volatile.ensure(state)  # on a tmpfs, as /run is on most hosts (see sandbox/volatile.py)
    state.mkdir(parents=True, exist_ok=True)
    if state.stat().st_mode & 0o077:
        state.chmod(0o700)


def _for_gvisor(config: dict[str, Any]) -> None:
    # runsc joins no network namespace by path: it is started inside the prepared one instead
    # (see Launcher._command). Without a path it must not make one either: --network=none.
    spaces: Sequence[dict[str, str]] = config["linux"]["namespaces"]
    config["linux"]["namespaces"] = [n for n in spaces if n["type"] != "network"]
    # The cgroup holds gVisor's own kernel (the Sentry, dozens of host threads) besides the
    # agent, whose processes are not host processes at all: the agent's process limit becomes
    # its RLIMIT_NPROC, which gVisor's kernel enforces, and the cgroup gets room for the Sentry.
    pids = config["linux"].get("resources", {}).get("pids")
    if pids and pids.get("limit"):
        limit = int(pids["limit"])
        pids["limit"] = limit + GVISOR_THREADS
        # The output relay (sandbox/relay.py) is one process of the sandbox's user more than
        # under runc: room for it, so that the agent's own count stays what its limit says.
        nproc = limit + (oci.RELAY in config["process"]["args"])
        rlimits = [r for r in config["process"]["rlimits"] if r["type"] != "RLIMIT_NPROC"]
        config["process"]["rlimits"] = [*rlimits, {"type": "RLIMIT_NPROC", "hard": nproc, "soft": nproc}]


def launchers(prefix: str, warm: int = 0) -> dict[Isolation, Launcher]:
    """A platform's launchers, one per isolation runtime, for sandboxes named `prefix`..., each
    keeping up to `warm` sandboxes started ahead of need."""
    return {
        isolation: Launcher(runtime=isolation.runtime, prefix=prefix, warm=warm) for isolation in Isolation
    }


_default: Launcher | None = None
_default_lock = threading.Lock()


def default() -> Launcher:
    global _default
    with _default_lock:
        if _default is None:
            _default = Launcher()
        return _default


def run_container(
    spec: ContainerSpec,
    on_stdout: Callable[[bytes], None],
    on_stderr: Callable[[bytes], None],
    timeout: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ContainerExit:
    """`Launcher.run_container` on a launcher shared by the process (runc, prefix orch-)."""
    return default().run_container(spec, on_stdout, on_stderr, timeout, should_stop)


def sweep(prefix: str) -> int:
    """What every runtime's sandboxes named `prefix`... left, removed (see `launcher.sweep_all`)."""
    return sweep_all(launchers(prefix).values(), prefix)
