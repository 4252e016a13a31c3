"""Service benchmark, side by side in one run on this machine (noisy machines: read the ratios).

1. Deploy time of a service with dependencies (requirements.txt: humanize), from `orch service
   deploy` to answering through the server, first deploy (installs) and an unchanged redeploy.
2. Time a crashed service takes to answer again: `podman kill` of its container, then requests
   through the server until one succeeds.
3. The proxy's added latency: N requests through the server's /services/... URL against N
   straight to the container's address, interleaved, keep-alive on both: p50, p99 and ratios;
   and, as the floor of any request to the server, N requests to its /healthz.

Usage: .venv/bin/python bench/service.py [N]   (needs scripts/setup; N defaults to 1000)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from local_platform import ORCH, cli, start_server
from orch.sandbox.service import PORT

from orch import config

SERVICE = """
import os, humanize
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        # One write for the whole answer: http.server's separate header and body writes would
        # meet Nagle's algorithm and delayed ACKs (~40 ms) and measure those instead.
        body = humanize.intcomma(1234567).encode()
        head = f"HTTP/1.1 200 OK\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n".encode()
        self.wfile.write(head + body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def wait_answer(api: httpx.Client, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api.get(path).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    sys.exit(f"{path} did not answer")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-svc-"))
    home = tmp / "home"
    app = tmp / "app"
    app.mkdir()
    (app / "main.py").write_text(SERVICE)
    (app / "requirements.txt").write_text("humanize==4.9.0\n")
    server = start_server(home)
    cfg = config.load(home, environ={})
    api = httpx.Client(base_url=cfg.url, headers={"Authorization": f"Bearer {cfg.token}"}, timeout=30)
    path = "/services/default/bench/"
    try:
        start = time.perf_counter()
        cli(home, "service", "deploy", str(app), "--name", "bench")
        wait_answer(api, path)
        first = time.perf_counter() - start
        (app / "main.py").write_text(SERVICE + "\n# v2\n")
        start = time.perf_counter()
        cli(home, "service", "deploy", str(app), "--name", "bench")
        wait_answer(api, path)
        second = time.perf_counter() - start

        svc = api.get("/v1/services/bench").json()
        start = time.perf_counter()
        subprocess.run(["podman", "kill", svc["container"]], capture_output=True, check=True)
        while api.get("/v1/services/bench").json()["restarts"] < 1:
            time.sleep(0.01)
        wait_answer(api, path)
        recovered = time.perf_counter() - start

        address = subprocess.run(
            [
                "podman",
                "inspect",
                "--format",
                "{{.NetworkSettings.IPAddress}}",
                api.get("/v1/services/bench").json()["container"],
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        direct = httpx.Client(base_url=f"http://{address}:{PORT}", timeout=30)
        proxied: list[float] = []
        straight: list[float] = []
        floor: list[float] = []
        for _ in range(20):  # warm the connections up
            api.get(path)
            direct.get("/")
        for _ in range(n):
            t = time.perf_counter()
            api.get(path).raise_for_status()
            proxied.append(time.perf_counter() - t)
            t = time.perf_counter()
            direct.get("/").raise_for_status()
            straight.append(time.perf_counter() - t)
            t = time.perf_counter()
            api.get("/healthz").raise_for_status()
            floor.append(time.perf_counter() - t)
        direct.close()

        print(f"deploy with requirements.txt, first (installs):  {first:6.2f} s")
        print(f"redeploy, same dependencies (layer cache):       {second:6.2f} s")
        print(f"crashed service answering again (podman kill):   {recovered:6.2f} s")
        print(f"requests: {n} each, interleaved, keep-alive")
        print(f"{'':30}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
        for label, values in (
            ("through the server's proxy", proxied),
            ("straight to the container", straight),
            ("server floor (GET /healthz)", floor),
        ):
            print(
                f"{label:30}{pct(values, 50) * 1e3:10.2f}{pct(values, 99) * 1e3:10.2f}"
                f"{statistics.mean(values) * 1e3:10.2f}"
            )
        print(
            f"{'ratio proxy / direct':30}{pct(proxied, 50) / pct(straight, 50):10.2f}"
            f"{pct(proxied, 99) / pct(straight, 99):10.2f}"
            f"{statistics.mean(proxied) / statistics.mean(straight):10.2f}"
        )
        added = (pct(proxied, 50) - pct(straight, 50)) * 1e3
        print(f"added latency per request (p50):                 {added:6.2f} ms")
        own = (pct(proxied, 50) - pct(floor, 50)) * 1e3
        print(f"of which proxying itself (p50 minus the floor):  {own:6.2f} ms")
    finally:
        api.close()
        subprocess.run(
            [ORCH, "service", "delete", "bench", "--yes"],
            env={**os.environ, "ORCH_HOME": str(home)},
            capture_output=True,
            check=False,
        )
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        instance = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
        ids = subprocess.run(
            ["podman", "ps", "-aq", "--filter", f"label=org.orch.instance={instance}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if ids:
            subprocess.run(["podman", "rm", "-f", "-t", "0", *ids], capture_output=True, check=False)
        images = subprocess.run(
            ["podman", "images", "-q", "--filter", f"label=org.orch.instance={instance}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if images:
            subprocess.run(["podman", "rmi", "-f", *images], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
