"""Per-run dependencies, installed once per (dependency files, environment image) and cached.

A run always sees exactly the dependencies its bundle declares; the install is keyed by the
content of requirements.txt / package.json / package-lock.json and the image id, so a repeated
run mounts the cached result read-only and installs nothing.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orch.engine.base import ContainerSpec, Engine, Mount
from orch.engine.network import Network
from orch.errors import InstallFailed
from orch.locking import file_lock
from orch.sandbox.layout import (
    BUNDLE,
    DEPS,
    NODE_DEPS_FILES,
    PYTHON_DEPS,
    PYTHON_DEPS_FILES,
    SCRATCH,
    WORKDIR,
)

_PYTHON_SCRIPT = f"""\
set -e
if command -v uv >/dev/null 2>&1; then
  uv pip install --no-cache --compile-bytecode --python "$(command -v python3)" \\
    --target {PYTHON_DEPS} -r {BUNDLE}/requirements.txt
else
  python3 -m pip install --no-cache-dir --target {PYTHON_DEPS} -r {BUNDLE}/requirements.txt
fi
"""

_NODE_SCRIPT = f"""\
set -e
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


def dependency_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    return {n: files[n] for n in (*PYTHON_DEPS_FILES, *NODE_DEPS_FILES) if n in files}


def cache_key(dep_files: Mapping[str, bytes], image_id: str) -> str:
    # The install scripts too: a changed recipe (bytecode compiled, say) installs anew.
    h = hashlib.sha256(image_id.encode() + _PYTHON_SCRIPT.encode() + _NODE_SCRIPT.encode())
    for name in sorted(dep_files):
        h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(dep_files[name]).digest())
    return h.hexdigest()


def _result(status: str, dep_files: Mapping[str, bytes], path: Path) -> Deps:
    mounts: list[Mount] = []
    env: dict[str, str] = {}
    if "requirements.txt" in dep_files:
        mounts.append(Mount(str(path / "python"), PYTHON_DEPS))
        env["PYTHONPATH"] = PYTHON_DEPS
    if "package.json" in dep_files:
        # Mounted where Node looks first, so both require() and ESM imports find the packages.
        mounts.append(Mount(str(path / "node" / "node_modules"), f"{WORKDIR}/node_modules"))
    return Deps(status, tuple(sorted(dep_files)), tuple(mounts), env)


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
    should_stop: Callable[[], bool] | None = None,
) -> Deps:
    """Mount the cached install for these dependency files, installing it first if needed.

    `base_spec` carries the platform's labels, CA mounts and proxy settings for the install
    sandbox; this function sets what the install itself needs."""
    if not dep_files:
        return Deps("none")
    key = cache_key(dep_files, image_id)
    path = cache_root / key
    names = ", ".join(sorted(dep_files))
    with file_lock(cache_root / f"{key}.lock"):
        if (path / ".complete").exists():
            log(f"{names}: cached, nothing to install")
            return _result("cached", dep_files, path)
        log(f"Installing {names}")
        tmp = cache_root / f"{key}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "python").mkdir(parents=True)
        (tmp / "node").mkdir()
        for d in (tmp, tmp / "python", tmp / "node"):
            os.chown(d, 1000, 1000)
        script = ""
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
                Mount(str(bundle_dir), BUNDLE),
                Mount(str(tmp), DEPS, read_only=False),
            ],
            tmpfs={SCRATCH: "rw,exec,nosuid,nodev,size=2g,mode=1777"},
            network=Network.SANDBOX,
            memory_bytes=2 * 1024**3,
            cpus=base_spec.cpus,
            pids=1024,
        )

        out, err = _Lines(log), _Lines(log)
        try:
            result = engine.run_container(spec, out, err, timeout=timeout, should_stop=should_stop)
        finally:
            out.close()
            err.close()
        # An install cut short is never cached, whatever its exit code (a kill may come just as
        # it ends): only one that ran to its end is.
        if result.exit_code != 0 or result.cancelled or result.timed_out:
            shutil.rmtree(tmp, ignore_errors=True)
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
            raise InstallFailed(
                f"Installing {names} failed (exit code {result.exit_code}).",
                "Fix the dependency files (the install output is above) and publish again.",
            )
        (tmp / "node" / "node_modules").mkdir(exist_ok=True)
        (tmp / ".complete").write_text(names + "\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        log(f"{names}: installed and cached")
        return _result("installed", dep_files, path)
