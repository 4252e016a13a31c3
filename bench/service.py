"""Service benchmark, side by side in one run on this machine (noisy machines: read the ratios).

1. Deploy times of a service with dependencies (requirements.txt: humanize), from `orch service
   deploy` to answering through the server: the first deploy (installs), an unchanged redeploy
   (nothing to do), and new code on the same requirements.txt (the dependency layer reused).
2. Time a crashed service takes to answer again: `podman kill` of its container, then requests
   through the server until one succeeds.
3. The proxy's cost, measured with `wrk` (Debian's package) against the server's
   service's URL on the services' origin (a private service: the token sent) and straight to the
   container's address, alternately: latency with one connection (p50, p99: the added latency
   per request) and requests per second with 16 connections; plus the server's floor
   (GET /healthz) for scale.

Usage: .venv/bin/python bench/service.py [SECONDS]   (needs scripts/setup --dev; 5 s per wrk run)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from local_platform import ORCH, cli, start_server

from orch import config
from orch.sandbox.service_spec import PORT

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

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


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


def wrk(url: str, connections: int, seconds: int, token: str | None = None) -> dict[str, float]:
    """p50 and p99 latency (ms) and requests/s of one wrk run; any non-2xx answer stops the bench."""
    args = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"wrk saw errors on {url}:\n{out}")

    def latency(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m[1]) * _UNITS[m[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    assert rps, out
    return {"p50": latency("50"), "p99": latency("99"), "rps": float(rps[1])}


def median(runs: list[dict[str, float]], key: str) -> float:
    values = sorted(r[key] for r in runs)
    return values[len(values) // 2]


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: scripts/setup --dev installs it (Debian's wrk).")
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-svc-"))
    home = tmp / "home"
    app = tmp / "app"
    app.mkdir()
    (app / "main.py").write_text(SERVICE)
    (app / "requirements.txt").write_text("humanize==4.9.0\n")
    server = start_server(home)
    cfg = config.load(home, environ={})
    token = str(cfg.token)
    api = httpx.Client(base_url=cfg.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        start = time.perf_counter()
        cli(home, "service", "deploy", str(app), "--name", "bench")
        path = api.get("/v1/services/bench").json()["url"]  # on the services' own origin
        wait_answer(api, path)
        first = time.perf_counter() - start
        start = time.perf_counter()
        said = cli(home, "service", "deploy", str(app), "--name", "bench")
        unchanged = time.perf_counter() - start
        assert "unchanged, still v1" in said, said
        (app / "main.py").write_text(SERVICE + "\n# v2\n")
        start = time.perf_counter()
        cli(home, "service", "deploy", str(app), "--name", "bench")
        wait_answer(api, path)
        new_code = time.perf_counter() - start

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
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                api.get("/v1/services/bench").json()["container"],
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        targets = {
            "through the server's proxy": (path, token),
            "straight to the container": (f"http://{address}:{PORT}/", None),
            "server floor (GET /healthz)": (f"{cfg.url}/healthz", None),
        }
        latency: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
        load: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
        for url, tok in targets.values():  # warm up: connections, caches
            wrk(url, 4, 1, tok)
        for _ in range(3):  # alternately, so that the machine's noise falls on both alike
            for name, (url, tok) in targets.items():
                latency[name].append(wrk(url, 1, seconds, tok))
                load[name].append(wrk(url, 16, seconds, tok))

        print(f"deploy with requirements.txt, first (installs):   {first:6.2f} s")
        print(f"redeploy, unchanged (nothing to do; CLI included): {unchanged:6.2f} s")
        print(f"redeploy, new code, same requirements.txt:         {new_code:6.2f} s")
        print(f"crashed service answering again (podman kill):     {recovered:6.2f} s")
        print(f"wrk, {seconds} s a run, median of 3 runs each, alternated")
        print(f"{'':30}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>10}  (latency: 1 connection; req/s: 16)")
        for name in targets:
            print(
                f"{name:30}{median(latency[name], 'p50'):9.2f}{median(latency[name], 'p99'):9.2f}"
                f"{median(load[name], 'rps'):10.0f}"
            )
        proxied, direct = "through the server's proxy", "straight to the container"
        added = median(latency[proxied], "p50") - median(latency[direct], "p50")
        share = median(load[proxied], "rps") / median(load[direct], "rps")
        print(f"added latency per request (p50):                   {added:6.2f} ms   (goal <= 1.5)")
        print(f"requests/s through the proxy / direct:             {share:6.2f}      (goal >= 0.5)")
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
