"""Run benchmark, side by side in one run on this machine (noisy machines: read the ratios).

1. Start-to-exit latency of a hello-world Python agent through orch (POST /v1/runs, then wait
   for the end), against plain `podman run --rm` of the same image with the same command, over
   N runs each, interleaved: p50 and p99 of both, and their ratios.
2. The second run of an agent with a requirements.txt against its first run (which installs).

Usage: .venv/bin/python bench/run.py [N]   (needs scripts/setup; N defaults to 50)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from local_platform import cli, start_server

from orch import config
from orch.builder import base_images


def publish(home: Path, directory: Path, name: str) -> None:
    cli(home, "publish", str(directory), "--name", name)


def orch_run(api: httpx.Client, agent: str) -> tuple[float, dict]:
    start = time.perf_counter()
    run = api.post("/v1/runs", json={"agent": agent}).json()
    far = {"stdout": 1 << 40, "stderr": 1 << 40, "log": 1 << 40}
    while api.get(f"/v1/runs/{run['id']}/logs", params={**far, "wait": 10}).json()["status"] not in (
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
    ):
        pass
    took = time.perf_counter() - start
    final = api.get(f"/v1/runs/{run['id']}").json()
    if final["status"] != "succeeded":
        sys.exit(f"run failed: {final}")
    return took, final


def podman_run(image: str, bundle: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network=none",
            "-v",
            f"{bundle}:/app:ro",
            image,
            "python",
            "/app/main.py",
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        home = Path(tmp) / "home"
        hello = Path(tmp) / "hello"
        hello.mkdir()
        (hello / "main.py").write_text("print('hello')\n")
        deps = Path(tmp) / "deps"
        deps.mkdir()
        (deps / "main.py").write_text("import six\nprint(six.__version__)\n")
        # A new comment each time, so the first run really installs.
        (deps / "requirements.txt").write_text(f"# bench {time.time_ns()}\nsix==1.16.0\n")
        server = start_server(home)
        try:
            cfg = config.load(home, environ={})
            with httpx.Client(
                base_url=cfg.url, headers={"Authorization": f"Bearer {cfg.token}"}, timeout=60
            ) as api:
                publish(home, hello, "hello")
                publish(home, deps, "deps")
                image = base_images.image_tag("python")
                orch_run(api, "hello")  # warm-up: bundle extracted, caches primed
                podman_run(image, hello)
                orch_times, podman_times = [], []
                for _ in range(n):
                    orch_times.append(orch_run(api, "hello")[0])
                    podman_times.append(podman_run(image, hello))
                first, r1 = orch_run(api, "deps")
                second, r2 = orch_run(api, "deps")
                assert (r1["deps"], r2["deps"]) == ("installed", "cached"), (r1, r2)
        finally:
            server.terminate()
            server.wait(30)
    o50, o99, p50, p99 = (
        pct(orch_times, 50),
        pct(orch_times, 99),
        pct(podman_times, 50),
        pct(podman_times, 99),
    )
    print(f"hello-world, {n} runs each (start to exit)")
    print(f"  orch run       p50 {o50:6.3f} s   p99 {o99:6.3f} s   mean {statistics.mean(orch_times):6.3f} s")
    print(
        f"  podman run     p50 {p50:6.3f} s   p99 {p99:6.3f} s   mean {statistics.mean(podman_times):6.3f} s"
    )
    print(f"  ratio orch / podman   p50 {o50 / p50:5.2f}   p99 {o99 / p99:5.2f}")
    print("agent with requirements.txt")
    print(f"  first run (installs)   {first:6.2f} s")
    print(f"  second run (cached)    {second:6.2f} s")
    print(f"  ratio second / first   {second / first:6.3f}")


if __name__ == "__main__":
    main()
