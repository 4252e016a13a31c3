"""Per-run dependencies, installed once per key and cached (docs/agents.md, "Dependencies").

A run always sees exactly the dependencies its bundle declares. An install whose dependency
files name only packages of an index sees those files alone (the rest of the bundle is not
mounted), so it is keyed by their content and the image id and shared by every bundle and
workspace with the same files; one that names anything of the bundle (sandbox/deps_scope.py)
sees the whole bundle and is keyed by the bundle's content and its workspace too. A repeated run
mounts the cached result read-only and installs nothing.

The install runs in a writable copy of what it sees, at /opt/orch/bundle and as its working
directory, as `pip install -r requirements.txt` runs in the agent's own directory: a relative path
(`./pkg`, `-e ./pkg`) names the bundle's package, and a build backend that writes into its source
tree (setuptools' egg-info and build/) can. The copy is made in the sandbox, on the install's tmpfs.
An editable requirement is installed as a regular one: the run finds the packages on PYTHONPATH,
which reads no .pth file, and the bundle it would point into is read-only there.

The install writes on a tmpfs of its own, sized to its memory limit and counted in it (its pages
are charged to the install sandbox's memory cgroup): nothing reaches the disk until it has ended
well, then its result is copied there (sandbox/deps_cache.py keeps the copies within their size).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from orch.engine.base import ContainerSpec, Engine, Mount
from orch.engine.network import Network
from orch.errors import InstallFailed
from orch.sandbox import deps_cache, rootfs
from orch.sandbox.deps_scope import reads_bundle
from orch.sandbox.layout import (
    BUNDLE,
    BUNDLE_SOURCE,
    DEPS,
    NODE_DEPS_FILES,
    PYTHON_DEPS,
    PYTHON_DEPS_FILES,
    SCRATCH,
    WORKDIR,
)
from orch.sizes import format_size

INSTALL_MEMORY = 2 * 1024**3  # the install sandbox's memory limit unless the caller says
INSTALL_PIDS = 1024  # the install sandbox's process limit (held in the server's run_pids)
INSTALL_CPUS = 1.0  # the install sandbox's CPUs at least, whatever the run's (see _install)
INSTALL_FILES = 262_144  # files, directories and links an install may write (its tmpfs's inodes)
_DEEPEST = 256  # directories in one another an install's result may have
# Changed when what a key stands for changes, so no entry of an older meaning is ever reused.
_SCHEME = b"orch-deps-2"
# The search paths a run's dependencies set (`Deps.env`), put before the image's own value of the
# variable by the sandbox's launcher (oci.environment, `search_path`). Node's packages need none:
# their node_modules is mounted in the working directory, where Node looks first.
_SEARCH_PATHS = {"PYTHONPATH": PYTHON_DEPS}

# What the install sees (BUNDLE_SOURCE, read-only) copied to a writable BUNDLE, its working directory.
_PRELUDE = f"""\
set -e
cp -R {BUNDLE_SOURCE}/. {BUNDLE}/
cd {BUNDLE}
"""

# Editable requirements installed as regular ones (uv: UV_NO_EDITABLE, which an older uv ignores
# where it would refuse an unknown --no-editable; pip has neither: its `-e` lines lose the `-e`).
_PYTHON_SCRIPT = f"""\
if command -v uv >/dev/null 2>&1; then
  UV_NO_EDITABLE=1 uv pip install --no-cache --compile-bytecode --python "$(command -v python3)" \\
    --target {PYTHON_DEPS} -r requirements.txt
else
  sed -i -E 's/^[[:space:]]*(-e|--editable)([[:space:]]+|=)?//' requirements.txt
  python3 -m pip install --no-cache-dir --target {PYTHON_DEPS} -r requirements.txt
fi
"""

_NODE_SCRIPT = f"""\
mkdir -p {DEPS}/node
cp {BUNDLE}/package.json {DEPS}/node/
cd {DEPS}/node
if [ -f {BUNDLE}/package-lock.json ]; then
  cp {BUNDLE}/package-lock.json .
  echo "npm ci (package-lock.json)"
  npm ci --no-audit --no-fund --no-update-notifier
else
  echo "npm install (no package-lock.json)"
  npm install --no-audit --no-fund --no-update-notifier
fi
mkdir -p node_modules
"""


class Cancelled(Exception):
    """The install was stopped by its run's cancel (`should_stop`): nothing of it was kept."""


@dataclass(frozen=True)
class Deps:
    status: str  # "none", "cached" or "installed"
    files: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # The run's hold on the cache entry it mounts (deps_cache.Use): released when its sandbox ends.
    use: deps_cache.Use | None = field(default=None, compare=False, repr=False)

    def release(self) -> None:
        if self.use is not None:
            self.use.release()


def search_path(name: str, value: str, image_value: str | None) -> str:
    """The value of the sandbox's variable `name`, given `value` by its spec and `image_value` by
    its image's ENV: the spec's, as in Podman, but for the dependencies' own PYTHONPATH, which
    comes first with the image's after it (an image's `ENV PYTHONPATH=/opt/lib` still found)."""
    if _SEARCH_PATHS.get(name) == value and image_value:
        return f"{value}:{image_value}"
    return value


def dependency_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    return {n: files[n] for n in (*PYTHON_DEPS_FILES, *NODE_DEPS_FILES) if n in files}


def cache_key(dep_files: Mapping[str, bytes], image_id: str, *, workspace_id: str, bundle_sha: str) -> str:
    """The install's key: the dependency files' content and the image id, and the install
    scripts too (a changed recipe, bytecode compiled say, installs anew); for an install that
    reads the bundle (deps_scope), the bundle's content and its workspace as well."""
    scripts = _PRELUDE + _PYTHON_SCRIPT + _NODE_SCRIPT
    h = hashlib.sha256(_SCHEME + b"\0" + image_id.encode() + scripts.encode())
    if reads_bundle(dep_files):
        h.update(b"\0bundle\0" + workspace_id.encode() + b"\0" + bundle_sha.encode())
    for name in sorted(dep_files):
        h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(dep_files[name]).digest())
    return h.hexdigest()


def _result(status: str, dep_files: Mapping[str, bytes], path: Path, use: deps_cache.Use) -> Deps:
    mounts: list[Mount] = []
    env: dict[str, str] = {}
    if "requirements.txt" in dep_files:
        mounts.append(Mount(str(path / "python"), PYTHON_DEPS))
        env["PYTHONPATH"] = PYTHON_DEPS
    if "package.json" in dep_files:
        # Mounted where Node looks first, so both require() and ESM imports find the packages.
        mounts.append(Mount(str(path / "node" / "node_modules"), f"{WORKDIR}/node_modules"))
    return Deps(status, tuple(sorted(dep_files)), tuple(mounts), env, use)


@contextlib.contextmanager
def _admitted(memory: int) -> Iterator[bool]:
    yield True


class _Lines:
    """An install's output stream, logged a whole line at a time (blank ones left out), indented
    under the install's note: the installers write a line in pieces (uv: "Installed ",
    "1 package", " in 21ms"), and each piece reaches us as soon as it is written. The bytes are
    decoded as they come, so a character written in two pieces, or at a long line's cut, is
    logged whole."""

    LONGEST = 64 * 1024  # characters: a line without an end is logged in pieces of this size

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._rest = ""

    def __call__(self, chunk: bytes) -> None:
        whole, end, self._rest = (self._rest + self._decode(chunk)).rpartition("\n")
        if end:
            self._emit(whole)
        while len(self._rest) >= self.LONGEST:
            self._emit(self._rest[: self.LONGEST])
            self._rest = self._rest[self.LONGEST :]

    def close(self) -> None:
        """Log what is left: the stream's last line, without an end."""
        self._rest += self._decode(b"", final=True)
        if self._rest:
            self._emit(self._rest)
            self._rest = ""

    def _emit(self, lines: str) -> None:
        for line in lines.split("\n"):
            if line := line.removesuffix("\r"):  # a blank line would break the indented block
                self._log("  " + line)


def ensure(
    engine: Engine,
    *,
    cache_root: Path,
    image: str,
    image_id: str,
    bundle_dir: Path,
    dep_files: Mapping[str, bytes],
    base_spec: ContainerSpec,
    log: Callable[[str], None],
    timeout: float,
    workspace_id: str,
    bundle_sha: str,
    should_stop: Callable[[], bool] | None = None,
    memory: int = INSTALL_MEMORY,
    admit: Callable[[int], AbstractContextManager[bool]] = _admitted,
    cache_size: int | None = None,
) -> Deps:
    """Mount the cached install for these dependency files, installing it first if needed; the
    result holds its cache entry until `Deps.release`.

    `base_spec` carries the platform's labels, CA mounts and proxy settings for the install
    sandbox; this function sets what the install itself needs. An install runs within
    `admit(memory)` (the server's memory budget: False, it was cancelled while it waited) and
    with that memory limit, which also bounds what it writes. After an install the cache is
    kept within `cache_size` bytes (deps_cache.evict)."""
    if not dep_files:
        return Deps("none")
    key = cache_key(dep_files, image_id, workspace_id=workspace_id, bundle_sha=bundle_sha)
    path = cache_root / key
    names = ", ".join(sorted(dep_files))

    def waiting() -> None:
        log(f"{names}: waiting for an install of the same files under way")

    with deps_cache.install_lock(cache_root, key, should_stop, waiting) as held:
        if not held:
            log(f"{names}: cancelled, nothing installed")
            raise Cancelled(names)
        if deps_cache.complete(path):
            deps_cache.touch(path)
            log(f"{names}: cached, nothing to install")
            return _result("cached", dep_files, path, deps_cache.Use(cache_root, key))
        with admit(memory) as admitted:
            if not admitted:
                log(f"{names}: cancelled, nothing installed")
                raise Cancelled(names)
            _install(
                engine,
                cache_root=cache_root,
                key=key,
                image=image,
                bundle_dir=bundle_dir,
                dep_files=dep_files,
                base_spec=base_spec,
                log=log,
                timeout=timeout,
                should_stop=should_stop,
                memory=memory,
            )
        use = deps_cache.Use(cache_root, key)
    log(f"{names}: installed and cached")
    if cache_size is not None:
        deps_cache.evict(cache_root, cache_size)
    return _result("installed", dep_files, path, use)


def _install(
    engine: Engine,
    *,
    cache_root: Path,
    key: str,
    image: str,
    bundle_dir: Path,
    dep_files: Mapping[str, bytes],
    base_spec: ContainerSpec,
    log: Callable[[str], None],
    timeout: float,
    should_stop: Callable[[], bool] | None,
    memory: int,
) -> None:
    """Install into a tmpfs of `memory` bytes, then copy the result to cache_root/key."""
    names = ", ".join(sorted(dep_files))
    whole_bundle = reads_bundle(dep_files)
    if whole_bundle:
        log(f"Installing {names} (it names files of the bundle: installed for this bundle alone)")
    else:
        log(f"Installing {names}")
    tmp = cache_root / f"{key}{deps_cache.TMP}{os.getpid()}-{time.monotonic_ns()}"
    written, out, given = tmp / "deps", tmp / "out", tmp / "files"
    try:
        written.mkdir(parents=True)
        rootfs.mount(
            "tmpfs",
            written,
            "tmpfs",
            rootfs.MS_NOSUID | rootfs.MS_NODEV,
            f"size={memory},nr_inodes={INSTALL_FILES},mode=0755",
        )
        copy = written / "bundle"  # the install's writable copy of what it sees, left out of its result
        (written / "python").mkdir()
        (written / "node").mkdir()
        copy.mkdir()
        for d in (written, written / "python", written / "node", copy):
            os.chown(d, 1000, 1000)
        if not whole_bundle:  # it sees its dependency files, nothing else of the bundle
            given.mkdir()
            for name, data in dep_files.items():
                (given / name).write_bytes(data)
        script = _PRELUDE
        if "requirements.txt" in dep_files:
            script += _PYTHON_SCRIPT
        if "package.json" in dep_files:
            script += _NODE_SCRIPT
        spec = ContainerSpec(
            image=image,
            argv=["/bin/sh", "-c", script],
            name=f"{base_spec.name}-deps",
            labels=base_spec.labels,
            env={**base_spec.env, "HOME": SCRATCH, "npm_config_cache": f"{SCRATCH}/.npm"},
            workdir=SCRATCH,
            user=base_spec.user,
            mounts=[
                *base_spec.mounts,
                Mount(str(bundle_dir if whole_bundle else given), BUNDLE_SOURCE),
                Mount(str(copy), BUNDLE, read_only=False),
                Mount(str(written), DEPS, read_only=False),
            ],
            tmpfs={SCRATCH: f"rw,exec,nosuid,nodev,size={memory},mode=1777"},
            network=Network.SANDBOX,
            memory_bytes=memory,
            # At least INSTALL_CPUS: an install of files another workspace's runs share (the cache
            # is keyed by them) is not throttled by the `cpus` of the run that came first.
            cpus=None if base_spec.cpus is None else max(base_spec.cpus, INSTALL_CPUS),
            pids=INSTALL_PIDS,
        )

        lines_out, lines_err = _Lines(log), _Lines(log)
        try:
            result = engine.run_container(
                spec, lines_out, lines_err, timeout=timeout, should_stop=should_stop
            )
        finally:
            lines_out.close()
            lines_err.close()
        # An install cut short is never cached, whatever its exit code (a kill may come just as
        # it ends): only one that ran to its end is.
        if result.cancelled:
            log(f"{names}: cancelled, nothing installed")
            raise Cancelled(names)
        if result.timed_out:
            raise InstallFailed(
                f"Installing {names} took longer than the server's build timeout "
                f"({timeout:g} s), and was stopped.",
                "Use fewer or lighter dependencies, or ask the operator for a longer "
                "build_timeout (ORCH_BUILD_TIMEOUT).",
            )
        if result.oom_killed:
            raise InstallFailed(
                f"Installing {names} ran out of memory: an install may use "
                f"{format_size(memory)}, what it writes included.",
                "Use fewer or lighter dependencies, or ask the operator for a larger "
                "install_memory (ORCH_INSTALL_MEMORY).",
            )
        if result.exit_code != 0:
            raise InstallFailed(
                f"Installing {names} failed (exit code {result.exit_code}).",
                "Fix the dependency files (the install output is above) and publish again.",
            )
        size = _copy_out(written, out, memory)
        deps_cache.mark_complete(out, names, size)
        rootfs.umount(written)
        shutil.rmtree(cache_root / key, ignore_errors=True)  # an incomplete one of an older server
        out.rename(cache_root / key)
    finally:
        rootfs.umount(written)
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_out(src: Path, dst: Path, limit: int) -> int:
    """Copy what the install wrote (src, its tmpfs) to `dst` on the disk; return the bytes it
    takes there (deps_cache.disk_size's measure). Its `python` and `node/node_modules` must be
    directories (they are bound into the run's sandbox). Directories, regular files and links
    are copied, never followed; hard links stay links; other kinds are left out. At most `limit`
    bytes of files: a sparse file could claim more than the tmpfs holds."""

    def refuse(what: str) -> InstallFailed:
        return InstallFailed(
            f"The install {what}.",
            "Fix the dependency files (the install output is above) and publish again.",
        )

    dst.mkdir()
    total, data = deps_cache.BLOCK, 0
    linked: dict[tuple[int, int], str] = {}
    finish: list[tuple[str, os.stat_result]] = []
    stack: list[tuple[str, str, int]] = []
    for name in ("python", "node"):
        try:
            st = os.lstat(src / name)
        except FileNotFoundError:
            raise refuse(f"removed {DEPS}/{name}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise refuse(f"replaced {DEPS}/{name} with something other than a directory")
        os.mkdir(dst / name, 0o700)
        finish.append((str(dst / name), st))
        stack.append((str(src / name), str(dst / name), 1))
    while stack:
        here, there, depth = stack.pop()
        with os.scandir(here) as listing:
            for entry in listing:
                st = entry.stat(follow_symlinks=False)
                target = os.path.join(there, entry.name)
                if stat.S_ISDIR(st.st_mode):
                    if depth >= _DEEPEST:
                        raise refuse(f"wrote directories more than {_DEEPEST} deep")
                    os.mkdir(target, 0o700)
                    finish.append((target, st))
                    stack.append((entry.path, target, depth + 1))
                    total += deps_cache.BLOCK
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(entry.path), target)
                    os.lchown(target, st.st_uid, st.st_gid)
                    total += deps_cache.BLOCK
                elif stat.S_ISREG(st.st_mode):
                    same = (st.st_dev, st.st_ino)
                    if same in linked:
                        os.link(linked[same], target)
                        continue
                    data += st.st_size
                    if data > limit:
                        raise refuse(f"wrote files of more than {format_size(limit)} (sparse files?)")
                    shutil.copyfile(entry.path, target, follow_symlinks=False)
                    _own(target, st)
                    if st.st_nlink > 1:
                        linked[same] = target
                    total += max(deps_cache.BLOCK, st.st_size)
    node_modules = dst / "node" / "node_modules"
    try:
        if not stat.S_ISDIR(os.lstat(node_modules).st_mode):
            raise refuse(f"replaced {DEPS}/node/node_modules with something other than a directory")
    except FileNotFoundError:
        node_modules.mkdir()
    for path, st in reversed(finish):  # a directory's time once its entries are in
        _own(path, st)
    return total


def _own(path: str, st: os.stat_result) -> None:
    """The owner, permissions (without set-id bits) and times the install gave it."""
    os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, stat.S_IMODE(st.st_mode) & 0o1777)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
