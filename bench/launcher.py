"""Launcher benchmark, side by side in one run on this machine (noisy machines: read the ratios).

Start-to-exit latency of one hello-world sandbox, the same image and command each time, over N
rounds; every round runs each side once, in turn, so the machine's load hits all sides alike:

- plain `podman run --rm` (no hardening flags, no cleanup of ours): the baseline;
- orch's Podman path today (`podman_run.run_container`: the hardened `podman run`, `podman rm`,
  the parent cgroup's removal), with no network and with the sandbox network;
- the runc launcher (`orch.sandbox.runc`), with no network and with the sandbox network (its
  namespace pool warm, as a server keeps it).

Printed: p50, p99 and mean of each side, and the ratios to the baseline and to orch's Podman path.

Usage: .venv/bin/python bench/launcher.py [N]   (as root, after scripts/setup; N defaults to 30)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orch.builder import base_images
from orch.engine import PodmanEngine, podman_run
from orch.engine.base import ContainerSpec
from orch.sandbox.deps import Deps
from orch.sandbox.runc import Launcher
from orch.sandbox.spec import Limits, run_spec

PREFIX = "orch-benchlaunch-"
LIMITS = Limits(cpus=1.0, memory_bytes=256 * 1024 * 1024, pids=128, timeout=60)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def spec(bundle: Path, name: str, network: bool) -> ContainerSpec:
    return run_spec(
        name=f"{PREFIX}{name}",
        image=base_images.image_tag("python"),
        command=["python3", "main.py"],
        bundle_dir=bundle,
        deps=Deps("none"),
        env={"ORCH_INPUT": ""},
        stdin=b"",
        limits=LIMITS,
        network=network,
        labels={"org.orch.kind": "bench"},
    )


def plain_podman(s: ContainerSpec) -> Callable[[], None]:
    """`podman run --rm` of the same image and command, with the same mounts and no flags else."""
    args = ["podman", "run", "--rm", "--network=none", f"--user={s.user}", f"--workdir={s.workdir}"]
    for m in s.mounts:
        args += ["-v", f"{m.host}:{m.container}:ro"]
    for path, options in s.tmpfs.items():
        args += ["--tmpfs", f"{path}:{options}"]
    args += [s.image, *s.argv]

    def go() -> None:
        res = subprocess.run(args, capture_output=True, check=False)
        if res.returncode != 0 or res.stdout != b"hello\n":
            sys.exit(f"podman run --rm failed: {res.stderr.decode()[-500:]}")

    return go


def through(run: Callable[..., object], s: ContainerSpec) -> Callable[[], None]:
    def go() -> None:
        out: list[bytes] = []
        result = run(s, out.append, out.append, timeout=60.0, should_stop=None)
        if getattr(result, "exit_code", 1) != 0 or b"".join(out) != b"hello\n":
            sys.exit(f"{s.name} failed: {result} {b''.join(out)[-500:]!r}")

    return go


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    engine = PodmanEngine()
    engine.prepare()
    launcher = Launcher(prefix=PREFIX, pool_size=2)
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        bundle = Path(tmp)
        (bundle / "main.py").write_text("print('hello')\n")
        bundle.chmod(0o755)
        sides: dict[str, Callable[[], None]] = {
            "podman run --rm": plain_podman(spec(bundle, "plain", False)),
            "orch podman, no network": through(engine.run_container, spec(bundle, "pn", False)),
            "orch podman, sandbox network": through(engine.run_container, spec(bundle, "ps", True)),
            "runc launcher, no network": through(launcher.run_container, spec(bundle, "rn", False)),
            "runc launcher, sandbox network": through(launcher.run_container, spec(bundle, "rs", True)),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        try:
            for go in sides.values():  # warm-up: image mounted, pools filled, caches primed
                go()
            launcher.wait()
            for _ in range(n):
                for name, go in sides.items():
                    start = time.perf_counter()
                    go()
                    times[name].append(time.perf_counter() - start)
        finally:
            launcher.close()
            launcher.sweep(PREFIX)
            engine.remove_leftovers(PREFIX)
            for name in ("pn", "ps"):
                podman_run.remove_cgroup_parent(f"{PREFIX}{name}")
    report(n, times)


def report(n: int, times: dict[str, list[float]]) -> None:
    plain = times["podman run --rm"]
    # Each side against the plain baseline, and against orch's Podman path on the same network.
    counterpart = {name: name.replace("runc launcher", "orch podman") for name in times}
    print(f"hello-world sandbox, {n} rounds (start to exit; each round runs every side once)")
    head = f"  {'side':32} {'p50':>7} {'p99':>7} {'mean':>7}"
    print(f"{head}  p50/plain p99/plain  p50/orch-podman p99/orch-podman")
    for name, values in times.items():
        p50, p99 = pct(values, 50), pct(values, 99)
        other = times.get(counterpart[name], values)
        print(
            f"  {name:32} {p50 * 1000:5.0f}ms {p99 * 1000:5.0f}ms {statistics.mean(values) * 1000:5.0f}ms"
            f"  {p50 / pct(plain, 50):9.2f} {p99 / pct(plain, 99):9.2f}"
            f"  {p50 / pct(other, 50):15.2f} {p99 / pct(other, 99):15.2f}"
        )


if __name__ == "__main__":
    main()
