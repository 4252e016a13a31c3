"""Running one sandbox with `podman run`: arguments, output streaming, limits and cleanup."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from orch.engine.base import ContainerExit, ContainerSpec
from orch.sandbox import seccomp

CHUNK = 65536
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_parent(name: str) -> str:
    """A parent cgroup of our own for a sandbox: it outlives the container, so its peak memory
    can still be read after the exit (Podman's OOMKilled stays false on cgroup v1 hosts)."""
    return f"/orch_{name}"


def run_args(binary: str, spec: ContainerSpec) -> list[str]:
    """The `podman run` command line for `spec`: hardened by default."""
    args = [binary, "run", "--name", spec.name, "-i", "--pull=never", "--init"]
    args += ["--cap-drop=all", "--security-opt=no-new-privileges", "--log-driver=none"]
    args.append(f"--security-opt=seccomp={seccomp.podman_profile()}")  # the runc launcher's rules
    if spec.read_only:
        # Podman's own tmpfs mounts for a read-only root are unbounded; we add sized ones instead.
        args += ["--read-only", "--read-only-tmpfs=false"]
    args.append(f"--network={spec.network.podman_name}")
    if spec.memory_bytes and (CGROUP_ROOT / "memory").is_dir():
        args.append(f"--cgroup-parent={cgroup_parent(spec.name)}")
    if spec.memory_bytes:
        # Swap equal to memory: the limit is a real limit, not a slow path to the disk.
        args += [f"--memory={spec.memory_bytes}b", f"--memory-swap={spec.memory_bytes}b"]
    if spec.cpus:
        args.append(f"--cpus={spec.cpus:g}")
    if spec.pids:
        args.append(f"--pids-limit={spec.pids}")
    if spec.user:
        args.append(f"--user={spec.user}")
    if spec.workdir:
        args.append(f"--workdir={spec.workdir}")
    for m in spec.mounts:
        args += ["-v", f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}"]
    for path, options in sorted(spec.tmpfs.items()):
        args += ["--tmpfs", f"{path}:{options}"]
    for k, v in sorted(spec.labels.items()):
        args += ["--label", f"{k}={v}"]
    for k, v in sorted(spec.env.items()):
        args += ["--env", f"{k}={v}"]
    return [*args, spec.image, *spec.argv]


def _pump(stream: IO[bytes], sink: Callable[[bytes], None]) -> None:
    while chunk := stream.read1(CHUNK):  # type: ignore[attr-defined]
        sink(chunk)


def _feed(stream: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        stream.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        stream.close()


def run_container(
    binary: str,
    spec: ContainerSpec,
    on_stdout: Callable[[bytes], None],
    on_stderr: Callable[[bytes], None],
    timeout: float | None,
    should_stop: Callable[[], bool] | None,
) -> ContainerExit:
    proc = subprocess.Popen(
        run_args(binary, spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin and proc.stdout and proc.stderr
    threads = [
        threading.Thread(target=_feed, args=(proc.stdin, spec.stdin), daemon=True),
        threading.Thread(target=_pump, args=(proc.stdout, on_stdout), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, on_stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    why = ""
    waited = 0.0
    try:
        while True:
            try:
                proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                waited += 0.1
            if not why and timeout is not None and waited >= timeout:
                why = "timeout"
            elif not why and should_stop is not None and should_stop():
                why = "cancel"
            if why:
                _kill(binary, spec.name)
                # Give podman a moment to reap; a second kill covers a container not yet started.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                break
        for t in threads[1:]:
            t.join(10)
        # An OOM kill is a SIGKILL (137); only then is it worth asking.
        oom = (
            proc.returncode == 137
            and not why
            and (_oom_killed(binary, spec.name) or _peak_reached_limit(spec))
        )
    finally:
        subprocess.run([binary, "rm", "-f", "-t", "0", spec.name], capture_output=True, check=False)
        remove_cgroup_parent(spec.name)
    return ContainerExit(
        exit_code=proc.returncode if proc.returncode is not None else -1,
        oom_killed=oom,
        timed_out=why == "timeout",
        cancelled=why == "cancel",
    )


def _peak_reached_limit(spec: ContainerSpec) -> bool:
    """Whether the sandbox's memory use reached its limit (read from our parent cgroup, v1)."""
    path = CGROUP_ROOT / "memory" / cgroup_parent(spec.name).lstrip("/") / "memory.max_usage_in_bytes"
    try:
        peak = int(path.read_text())
    except (OSError, ValueError):
        return False
    # The kernel kills a little before or after the exact limit; within 1% counts as reaching it.
    return spec.memory_bytes is not None and peak >= spec.memory_bytes * 0.99


def _pids_reached_limit(name: str, limit: int | None) -> bool:
    """Whether the sandbox `name`'s process count reached `limit`, its pids cgroup's, as our
    parent cgroup's counters say (the sandbox's own cgroup is gone with it): on v2, the "max" of
    its pids.events, which counts the forks refused below it (kernel 6.11 on); else its
    pids.peak, the most tasks the sandbox had at once. On v1 the "max" counts only the forks
    refused in the cgroup itself, so the parent's is 0 and its peak says it."""
    if not limit:
        return False
    parent = cgroup_parent(name).lstrip("/")
    folder = CGROUP_ROOT / "pids" / parent  # v1, or hybrid: one hierarchy per controller
    if not folder.is_dir():
        folder = CGROUP_ROOT / parent  # v2: the unified hierarchy
    try:
        events = dict(line.split() for line in (folder / "pids.events").read_text().splitlines())
        if int(events.get("max", 0)) > 0:
            return True
        return int((folder / "pids.peak").read_text()) >= limit
    except (OSError, ValueError):
        return False


def remove_cgroup_parent(container_name: str, attempts: int = 20) -> bool:
    """Remove the sandbox's parent cgroup in every controller. Right after `podman rm` a child
    (conmon's) may still be going away, so a busy directory is tried again for up to ~2 s.
    Return whether it is gone (not: processes are still in it)."""
    name = cgroup_parent(container_name).lstrip("/")
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.1)
        left = False
        for hierarchy in _hierarchies():
            parent = hierarchy / name
            try:
                parent.rmdir()  # the usual case: the container's own cgroup is gone already
                continue
            except FileNotFoundError:
                continue
            except OSError:
                pass
            # Children first.
            for child in sorted(parent.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()
            left = left or parent.exists()
        if not left:
            return True
    return False


def _hierarchies() -> list[Path]:
    """The cgroup hierarchies mounted under CGROUP_ROOT (one per controller on v1)."""
    try:
        return [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def cgroup_parents(name_prefix: str) -> set[str]:
    """Container names whose parent cgroup (of `cgroup_parent`) exists in some controller."""
    marker = cgroup_parent("").lstrip("/")
    return {p.name[len(marker) :] for p in CGROUP_ROOT.glob(f"*/{marker}{name_prefix}*") if p.is_dir()}


def _kill(binary: str, name: str) -> None:
    subprocess.run([binary, "kill", name], capture_output=True, check=False, timeout=30)


def _oom_killed(binary: str, name: str) -> bool:
    res = subprocess.run(
        [binary, "inspect", "--type", "container", "--format", "{{.State.OOMKilled}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip() == "true"
