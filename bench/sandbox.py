"""Sandboxes on demand against Podman, side by side in one run on this machine (read the ratios).

One real server (a fresh ORCH_HOME under /tmp, `orch server --port 0`, default settings), then N
rounds; each round, in a shuffled order so the machine's load hits every side alike:

- orch: POST /v1/sandboxes, then POST .../exec of `true` until it answers (the first command);
  then M commands `true` (the exec round trip, through the API as a client sends them); then
  DELETE the sandbox (timed apart: what removing costs);
- podman: `podman run -d` of the same image with the same limits (`--init`, no network, uid
  1000, memory, CPUs, pids) and `sleep infinity` as its command, then `podman exec` of `true`
  (the first command); then M `podman exec ... true`; then `podman rm -f -t 0` (timed apart).

Printed: p50 and p99 of "create → first command answered", of one command's round trip, and of the
removal, on each side, and the ratios orch / podman.

Usage: .venv/bin/python bench/sandbox.py [ROUNDS] [--execs M] [--seed S]
       (as root, after scripts/setup; ROUNDS defaults to 20, M to 10)
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from local_platform import start_server

from orch import config
from orch.builder import base_images

LIMITS = {"memory": "512Mi", "cpus": 1.0}
PODMAN_LIMITS = ["--memory=512m", "--memory-swap=512m", "--cpus=1", "--pids-limit=256"]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def orch_round(api: httpx.Client, execs: int) -> tuple[float, list[float], float]:
    began = time.perf_counter()
    created = api.post("/v1/sandboxes", json=LIMITS)
    created.raise_for_status()
    url = f"/v1/sandboxes/{created.json()['id']}"
    first = api.post(f"{url}/exec", json={"command": ["true"]})
    if first.status_code != 200 or first.json()["exit_code"] != 0:
        sys.exit(f"orch exec: {first.status_code} {first.text}")
    ready = time.perf_counter() - began
    trips = []
    for _ in range(execs):
        start = time.perf_counter()
        resp = api.post(f"{url}/exec", json={"command": ["true"]})
        trips.append(time.perf_counter() - start)
        if resp.status_code != 200 or resp.json()["exit_code"] != 0:
            sys.exit(f"orch exec: {resp.status_code} {resp.text}")
    start = time.perf_counter()
    api.delete(url).raise_for_status()
    return ready, trips, time.perf_counter() - start


def podman(*args: str) -> str:
    res = subprocess.run(["podman", *args], capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"podman {args[0]}: exit {res.returncode}: {res.stderr[-300:]}")
    return res.stdout


def podman_round(image: str, execs: int) -> tuple[float, list[float], float]:
    name = f"bench-sandbox-{uuid.uuid4().hex[:12]}"
    began = time.perf_counter()
    podman("run", "-d", "--name", name, "--init", "--network=none", "--user=1000:1000", *PODMAN_LIMITS,
           image, "sleep", "infinity")  # fmt: skip
    podman("exec", name, "true")
    ready = time.perf_counter() - began
    trips = []
    for _ in range(execs):
        start = time.perf_counter()
        podman("exec", name, "true")
        trips.append(time.perf_counter() - start)
    start = time.perf_counter()
    podman("rm", "-f", "-t", "0", name)
    return ready, trips, time.perf_counter() - start


def line(label: str, orch: list[float], base: list[float]) -> str:
    o50, o99, b50, b99 = pct(orch, 50), pct(orch, 99), pct(base, 50), pct(base, 99)
    return (
        f"  {label:<32} orch p50 {o50 * 1000:7.1f} ms  p99 {o99 * 1000:7.1f} ms   "
        f"podman p50 {b50 * 1000:7.1f} ms  p99 {b99 * 1000:7.1f} ms   ratio p50 {o50 / b50:5.2f}×  "
        f"p99 {o99 / b99:5.2f}×"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=20)
    parser.add_argument("--execs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args()
    shuffle = random.Random(args.seed)
    image = base_images.image_tag("python")
    with tempfile.TemporaryDirectory(prefix="orch-bench-sandbox-") as tmp:
        home = Path(tmp) / "home"
        server = start_server(home)
        try:
            cfg = config.load(home, environ={})
            headers = {"Authorization": f"Bearer {cfg.token}"}
            with httpx.Client(base_url=cfg.url, headers=headers, timeout=120) as api:
                orch_round(api, 1)  # warm: the image's root mounted, the first connection made
                podman_round(image, 1)
                results: dict[str, tuple[list[float], list[float], list[float]]] = {
                    "orch": ([], [], []),
                    "podman": ([], [], []),
                }
                for _ in range(args.rounds):
                    sides = ["orch", "podman"]
                    shuffle.shuffle(sides)
                    for side in sides:
                        ready, trips, removed = (
                            orch_round(api, args.execs) if side == "orch" else podman_round(image, args.execs)
                        )
                        results[side][0].append(ready)
                        results[side][1].extend(trips)
                        results[side][2].append(removed)
        finally:
            server.terminate()
            server.wait(60)
    o, p = results["orch"], results["podman"]
    print(f"sandboxes on demand: {args.rounds} rounds, {args.execs} commands each, seed {args.seed}")
    print(line("create → first command answered", o[0], p[0]))
    print(line("command round trip (true)", o[1], p[1]))
    print(line("remove", o[2], p[2]))


if __name__ == "__main__":
    main()
