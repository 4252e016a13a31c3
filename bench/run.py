"""Run benchmark, side by side in one run on this machine (noisy machines: read the ratios).

One real server (a fresh ORCH_HOME under /tmp, `orch server --port 0`, default settings), then:

1. Latency, N rounds; each round runs, in a shuffled order so the machine's load and the server's
   background work hit every side alike:
   - `podman run --rm` of the same image and command (the baseline);
   - a hello run through the API (runc, the default): POST /v1/runs, then following its output as
     `orch run` does (long polls) until a poll answers with the ended run, its output read;
   - the same agent with `isolation: gvisor` (runsc), and with `network: false`;
   - an agent with a requirements.txt, its dependencies cached (after one first run that installs).
   - the same dependencies, cached, for an agent that does not import them: what the platform
     alone adds for dependencies, apart from python importing six;
   - the deps agent without a requirements.txt, six.py shipped in its bundle instead (the same
     file the install put in the cache): the same agent, the same work, no dependencies.
   After each step the bench waits until that run's sandbox is removed and the machine has been
   nearly idle for 50 ms (1 s at most): what a step leaves running in the background (a gVisor
   sandbox's teardown, the next warm sandbox, podman's cleanup) would otherwise land on the next
   step's clock, and a fixed seed's order would hand it to some kinds more than others.
   Every run gets a distinct input and must print it back. Printed: p50, p99 and mean of each,
   and the goals' ratios (issue 12). Then N hello runs back to back (each as soon as the one
   before has ended, as a script's loop does), with their p50's ratio to the interleaved hello's.
2. Throughput: BURST hello runs submitted at once by a bounded pool of client threads, each
   with its own `orch.Client` (the platform's Python client), each run then waited for with
   `run.wait()` (long polls of its output to its end, then the run read) and its own output
   checked: runs/s from the first POST to the last run seen ended, the steady rate between the
   10th and 90th percentile of the server's finish times, failures. Beside it, the machine's
   speed at that moment: BURST `python3 -c pass` started two at a time, just before and just
   after the burst (starts/s), and the burst's runs/s as a share of it. The goal is absolute
   runs/s; this reference says how much of a miss or a pass is the machine's.
3. Where the time goes: the server's `orch_run_phase_seconds` histograms (GET /metrics), read after
   each run (once its last phase is recorded) so each kind of run gets its own phases: mean ms per
   phase, the sum of the phases, and what the client waited beyond them; and the CPU the server
   process and its children (the runtime and the sandbox, CNI plugins, podman) spent per run.
   The server's tracebacks, if it logged any, are printed.

Usage: .venv/bin/python bench/run.py [ROUNDS] [--burst N] [--clients K] [--seed S]
       (as root, after scripts/setup; ROUNDS defaults to 40, BURST to 200, K to 32)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from local_platform import cli, start_server

from orch import config
from orch.builder import base_images
from orch.client import Client
from orch.client.runs import Run

# The orch agents of the latency rounds: runc, gVisor, runc without network, with dependencies.
KINDS = ("hello", "hello-gvisor", "hello-nonet", "deps", "deps-quiet", "vendored")
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}
PHASES = ("api", "queue", "prepare", "start", "run", "exit", "store")
# The agents: each prints its input back (the podman baseline runs the same file and command).
ECHO = "import os\nprint(os.environ['ORCH_INPUT'])\n"
ECHO_DEPS = "import os\nimport six\nprint(os.environ['ORCH_INPUT'])\n"

# Histograms and counters of /metrics: name{labels} value.
SAMPLE = re.compile(r"^orch_run_phase_seconds_(sum|count|bucket)\{([^}]*)\} (\S+)$", re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')


# Helpers: percentiles, the clients, the metrics.


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def api_client(cfg: config.Config, timeout: float = 60) -> httpx.Client:
    # keepalive below the server's 65 s, so the pool never reuses a connection the server closes.
    return httpx.Client(
        base_url=cfg.url,
        headers={"Authorization": f"Bearer {cfg.token}"},
        timeout=timeout,
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=60),
    )


@dataclass
class Phases:
    """Sums and counts of the phase histograms, and their buckets (cumulative counts by bound)."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)

    def __sub__(self, other: Phases) -> Phases:
        return Phases(
            {p: self.sums.get(p, 0.0) - other.sums.get(p, 0.0) for p in PHASES},
            {p: self.counts.get(p, 0.0) - other.counts.get(p, 0.0) for p in PHASES},
            {
                p: {
                    le: n - other.buckets.get(p, {}).get(le, 0.0) for le, n in self.buckets.get(p, {}).items()
                }
                for p in PHASES
            },
        )

    def __add__(self, other: Phases) -> Phases:
        return Phases(
            {p: self.sums.get(p, 0.0) + other.sums.get(p, 0.0) for p in PHASES},
            {p: self.counts.get(p, 0.0) + other.counts.get(p, 0.0) for p in PHASES},
            {
                p: {
                    le: self.buckets.get(p, {}).get(le, 0.0) + other.buckets.get(p, {}).get(le, 0.0)
                    for le in set(self.buckets.get(p, {})) | set(other.buckets.get(p, {}))
                }
                for p in PHASES
            },
        )

    def mean_ms(self, phase: str) -> float:
        n = self.counts.get(phase, 0.0)
        return 1000 * self.sums.get(phase, 0.0) / n if n else float("nan")

    def quantile_ms(self, phase: str, q: float) -> float:
        """As Prometheus' histogram_quantile: linear within the bucket the quantile falls in."""
        cumulative = sorted(self.buckets.get(phase, {}).items())
        total = self.counts.get(phase, 0.0)
        if not total or not cumulative:
            return float("nan")
        rank, lower, below = q * total, 0.0, 0.0
        for le, n in cumulative:
            if n >= rank:
                if le == float("inf"):
                    return 1000 * lower
                return 1000 * (lower + (le - lower) * ((rank - below) / (n - below) if n > below else 1.0))
            lower, below = le, n
        return 1000 * lower


def scrape(api: httpx.Client) -> Phases:
    text = api.get("/metrics").raise_for_status().text
    found = Phases()
    for kind, labels, value in SAMPLE.findall(text):
        names = dict(LABEL.findall(labels))
        phase = names.get("phase", "")
        if kind == "sum":
            found.sums[phase] = float(value)
        elif kind == "count":
            found.counts[phase] = float(value)
        else:
            found.buckets.setdefault(phase, {})[float(names["le"])] = float(value)
    return found


def settled(api: httpx.Client, before: Phases, runs: int, limit: float = 10.0) -> Phases:
    """The metrics once `runs` more runs have recorded their last phases since `before`: `store`
    (a follower sees a run ended a moment before the worker records it) and `exit` (the sandbox
    removed, after the end is stored)."""
    deadline = time.monotonic() + limit
    while True:
        now = scrape(api)
        if (
            all(now.counts.get(p, 0.0) >= before.counts.get(p, 0.0) + runs for p in ("store", "exit"))
            or time.monotonic() > deadline
        ):
            return now
        time.sleep(0.005)


def _busy() -> tuple[float, float]:
    """The machine's busy and total CPU time since boot, in ticks (/proc/stat's first line)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


QUIET_WAITS: list[tuple[float, bool]] = []  # each quiet(): seconds waited, and whether it was calm


def quiet(limit: float = 1.0, window: float = 0.05, busy_share: float = 0.25) -> None:
    """Wait (at most `limit` seconds) until the machine has been nearly idle for a `window`: the
    background work a step leaves (a removed gVisor sandbox's last processes, the next warm
    sandbox started, the network namespaces refilled, podman's own cleanup) done before the next
    step's clock starts, so no kind of run pays for the one before it."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        b0, t0 = _busy()
        time.sleep(window)
        b1, t1 = _busy()
        if t1 > t0 and (b1 - b0) / (t1 - t0) < busy_share:
            QUIET_WAITS.append((time.monotonic() - began, True))
            return
    QUIET_WAITS.append((time.monotonic() - began, False))


def cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the server process itself, and of its children it has waited for (runc or
    runsc and what ran in the sandbox, the CNI plugins, iptables, podman calls)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) / tick for x in fields[11:15])
    return utime + stime, cutime + cstime


def tracebacks(log: Path) -> list[str]:
    """The tracebacks in the server's log (the lines from 'Traceback' to the exception's)."""
    found: list[str] = []
    lines = log.read_text(errors="replace").splitlines()
    for i, text in enumerate(lines):
        if text.startswith("Traceback"):
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].startswith(" ")), len(lines) - 1)
            found.append("\n".join([lines[i - 1] if i else "", *lines[i : end + 1]]))
    return found


# One run of each kind.


class Failed(Exception):
    pass


def follow(api: httpx.Client, run_id: str) -> str:
    """Follow a run as `orch run` does: long polls of its output from where the last one ended,
    until one answers with the run ended. Its stdout."""
    offsets, out = {"stdout": 0, "stderr": 0, "log": 0}, ""
    while True:
        chunk = api.get(f"/v1/runs/{run_id}/logs", params={**offsets, "wait": 10}).raise_for_status().json()
        offsets, out = chunk["offsets"], out + str(chunk["stdout"])
        if chunk["status"] in FINAL:
            return out


def orch_run(api: httpx.Client, agent: str) -> tuple[float, dict[str, Any]]:
    """POST a run and follow it as `orch run` does, until a poll answers with its end (its output
    then read whole); the seconds that took, and the run. Its output must be its input."""
    text = f"{agent}-{uuid.uuid4().hex}"
    start, posted = time.perf_counter(), time.time()
    resp = api.post("/v1/runs", json={"agent": agent, "input": text})
    if resp.status_code != 201:
        raise Failed(f"POST /v1/runs ({agent}): {resp.status_code} {resp.text[:300]}")
    run_id = resp.json()["id"]
    out = follow(api, run_id)
    took, seen = time.perf_counter() - start, time.time()
    run = api.get(f"/v1/runs/{run_id}").raise_for_status().json()
    if run["status"] != "succeeded" or out.strip() != text:
        logs = api.get(f"/v1/runs/{run_id}/logs").json()  # what the platform and the agent said
        raise Failed(
            f"run {run_id} ({agent}): {run['status']} {run.get('reason')!r}, printed {out!r}; "
            f"log {logs.get('log', '')[-600:]!r}; stderr {logs.get('stderr', '')[-600:]!r}"
        )
    # The client's own clock against the server's stamps (one machine, one clock): POST → queued,
    # queued → finished, finished → the end seen by the follower.
    run["_split"] = (
        epoch(run["queued_at"]) - posted,
        epoch(run["finished_at"]) - epoch(run["queued_at"]),
        seen - epoch(run["finished_at"]),
    )
    return took, run


def podman_run(image: str, bundle: Path) -> float:
    """`podman run --rm` of the same image and command (no network, as the cheapest Podman run)."""
    text = f"podman-{uuid.uuid4().hex}"
    start = time.perf_counter()
    res = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network=none",
            "-e",
            f"ORCH_INPUT={text}",
            "-v",
            f"{bundle}:/app:ro",
            image,
            "python3",
            "/app/main.py",
        ],
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - start
    if res.returncode or res.stdout.strip() != text:
        raise Failed(f"podman run: exit {res.returncode}, {res.stdout!r} {res.stderr[-300:]!r}")
    return took


# The throughput test.


@dataclass
class Burst:
    n: int
    clients: int
    wall: float = 0.0  # first POST → last run seen ended by its client
    post_wall: float = 0.0  # first POST → last POST answered
    failures: list[str] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # the server's finished_at, epoch seconds
    latencies: list[float] = field(default_factory=list)  # each run: its POST → its end seen


def epoch(stamp: str) -> float:
    when = dt.datetime.fromisoformat(stamp)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def reference(n: int, at_once: int = 2) -> float:
    """The machine's speed now: `python3 -c pass` started `n` times, `at_once` at a time (the
    machine's two cores), in starts per second."""

    def start(_: int) -> None:
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)

    began = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(start, range(n)))
    return n / (time.perf_counter() - began)


def burst(cfg: config.Config, agent: str, n: int, clients: int) -> Burst:
    """`n` runs submitted at once by `clients` threads, each with its own `orch.Client` (the
    platform's Python client, as a user's program would); each run then waited for (`wait()`:
    long polls of its output, then the run read) and its output checked against its own input."""
    local = threading.local()
    made: list[Client] = []
    made_lock = threading.Lock()

    def client() -> Client:
        api: Client | None = getattr(local, "api", None)
        if api is None:
            api = local.api = Client(cfg.url, cfg.token, timeout=120)
            with made_lock:
                made.append(api)
        return api

    result = Burst(n, clients)
    inputs = [f"burst-{i}-{uuid.uuid4().hex}" for i in range(n)]
    posted: list[tuple[Run | None, float]] = [(None, 0.0)] * n
    lock = threading.Lock()

    def fail(why: str) -> None:
        with lock:
            result.failures.append(why)

    def post(i: int) -> None:
        start = time.perf_counter()
        try:
            posted[i] = (client().runs.create(agent, inputs[i]), start)
        except Exception as e:  # what the client raises for any refusal or broken connection
            fail(f"POST {i}: {e!r}")

    def wait(i: int) -> None:
        run, start = posted[i]
        if run is None:
            return
        try:
            run.wait()
            seen = time.perf_counter()
            with lock:
                result.latencies.append(seen - start)
                if run.finished_at:
                    result.finished.append(run.finished_at.timestamp())
            if run.status != "succeeded":
                fail(f"run {i} {run.id}: {run.status} {run.reason!r}; log {run.log[-300:]!r}")
            elif run.stdout.strip() != inputs[i]:
                fail(f"run {i} {run.id}: printed {run.stdout[:100]!r}, not its input")
        except Exception as e:
            fail(f"run {i} {run.id}: {e!r}")

    try:
        with ThreadPoolExecutor(clients) as pool:
            began = time.perf_counter()
            list(pool.map(post, range(n)))
            result.post_wall = time.perf_counter() - began
            list(pool.map(wait, range(n)))
            result.wall = time.perf_counter() - began
    finally:
        for c in made:
            c.close()
    return result


# Printing.


def line(label: str, values: list[float]) -> str:
    return (
        f"  {label:<26} p50 {pct(values, 50) * 1000:7.1f} ms   p99 {pct(values, 99) * 1000:7.1f} ms"
        f"   mean {statistics.mean(values) * 1000:7.1f} ms"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=40, help="latency rounds (default 40)")
    parser.add_argument("--burst", type=int, default=200, help="runs submitted at once (default 200)")
    parser.add_argument("--clients", type=int, default=32, help="client threads of the burst (default 32)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the rounds' order")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    load_before = os.getloadavg()
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="orch-bench-run-") as tmp:
        home = Path(tmp) / "home"
        agents = {}
        requirements = f"# bench {time.time_ns()}\nsix==1.16.0\n"
        for name, code, extra in (
            ("hello", ECHO, {}),
            ("hello-gvisor", ECHO, {"orch.yaml": "name: hello-gvisor\nisolation: gvisor\n"}),
            ("hello-nonet", ECHO, {"orch.yaml": "name: hello-nonet\nnetwork: false\n"}),
            ("deps", ECHO_DEPS, {"requirements.txt": requirements}),
            # The same dependencies, cached, but not imported: what the platform alone adds.
            ("deps-quiet", ECHO, {"requirements.txt": requirements}),
        ):
            # The requirements file gets a new comment each time, so the first run really installs.
            d = Path(tmp) / name
            d.mkdir()
            (d / "main.py").write_text(code)
            for fname, text in extra.items():
                (d / fname).write_text(text)
            agents[name] = d
        server_log = Path(tmp) / "server.log"
        server = start_server(home, log=server_log)
        try:
            cfg = config.load(home, environ={})
            with api_client(cfg) as api:
                for name, d in agents.items():
                    cli(home, "publish", str(d), "--name", name)
                image = base_images.image_tag("python")
                # Warm-up: the image's root mounted, the bundles extracted, the runtimes' caches.
                for _ in range(2):
                    orch_run(api, "hello")
                    orch_run(api, "hello-gvisor")
                    orch_run(api, "hello-nonet")
                    podman_run(image, agents["hello"])
                first_deps, r1 = orch_run(api, "deps")
                warm_deps, r2 = orch_run(api, "deps")
                r3 = orch_run(api, "deps-quiet")[1]
                if (r1["deps"], r2["deps"], r3["deps"]) != ("installed", "cached", "cached"):
                    raise Failed(f"deps: {r1['deps']} then {r2['deps']}; deps-quiet: {r3['deps']}")
                # The deps agent with the installed six.py in its bundle, no requirements.txt.
                vendored = Path(tmp) / "vendored"
                vendored.mkdir()
                (vendored / "main.py").write_text(ECHO_DEPS)
                (vendored / "six.py").write_bytes(next((home / "deps").glob("*/python/six.py")).read_bytes())
                cli(home, "publish", str(vendored), "--name", "vendored")
                for _ in range(2):
                    if orch_run(api, "vendored")[1]["deps"] != "none":
                        raise Failed("the vendored agent has dependencies")
                gv = orch_run(api, "hello-gvisor")[1]
                if gv.get("isolation") != "gvisor":
                    raise Failed(f"hello-gvisor ran under {gv.get('isolation')!r}")

                times: dict[str, list[float]] = {k: [] for k in ("podman", *KINDS)}
                server_side: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
                phases: dict[str, Phases] = {k: Phases() for k in server_side}
                cpus: dict[str, list[tuple[float, float]]] = {k: [] for k in server_side}
                failures: list[str] = []
                steps: list[tuple[str, Callable[[], None]]] = []

                def orch_step(agent: str) -> Callable[[], None]:
                    def step() -> None:
                        before, cpu_before = scrape(api), cpu(server.pid)
                        try:
                            took, run = orch_run(api, agent)
                        except Failed as e:  # counted and shown; the rounds go on
                            failures.append(str(e))
                            if len(failures) > max(3, args.rounds // 10):
                                raise Failed(
                                    f"{len(failures)} runs failed:\n" + "\n".join(failures)
                                ) from None
                            return
                        times[agent].append(took)
                        if agent.startswith("deps") and run["deps"] != "cached":
                            raise Failed(f"deps run: {run['deps']}")
                        server_side[agent].append(run["_split"])
                        time.sleep(0.05)  # the run's own work done; then the scrapes, not counted
                        cpu_after = cpu(server.pid)
                        phases[agent] = phases[agent] + (settled(api, before, 1) - before)
                        cpus[agent].append((cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]))

                    return step

                steps = [
                    ("podman", lambda: times["podman"].append(podman_run(image, agents["hello"]))),
                    *((a, orch_step(a)) for a in server_side),
                ]
                latency_began = time.monotonic()
                for _ in range(args.rounds):
                    rng.shuffle(steps)
                    for _name, step in steps:
                        step()
                        quiet()  # what the step left running ends before the next one's clock
                latency_wall = time.monotonic() - latency_began

                # The same agent back to back, as a script calling it in a loop does: each run
                # comes as soon as the one before it has ended (warm-sandboxes.md: a second waits).
                time.sleep(1)
                in_a_row = [orch_run(api, "hello")[0] for _ in range(args.rounds)]

                time.sleep(1)  # the namespace pool refilled, the last runs' cleanups done
                before, cpu_before = scrape(api), cpu(server.pid)
                load_burst = os.getloadavg()
                speed = [reference(args.burst)]
                b = burst(cfg, "hello", args.burst, args.clients)
                speed.append(reference(args.burst))
                burst_phases = settled(api, before, args.burst - len(b.failures), limit=30) - before
                time.sleep(1)  # the last namespaces destroyed
                cpu_after = cpu(server.pid)
                cpus["burst"] = [(cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])]
        finally:
            server.terminate()
            server.wait(30)
            if crashes := tracebacks(server_log):
                print(f"the server logged {len(crashes)} tracebacks; the first:", file=sys.stderr)
                for text in crashes[:3]:
                    print(text, file=sys.stderr)
    load_after = os.getloadavg()

    # The report.
    hp, pp, gp, np_, dp = (times[k] for k in ("hello", "podman", "hello-gvisor", "hello-nonet", "deps"))
    qp, vp = times["deps-quiet"], times["vendored"]
    h50, h99, p50, g50, d50 = pct(hp, 50), pct(hp, 99), pct(pp, 50), pct(gp, 50), pct(dp, 50)
    q50, v50 = pct(qp, 50), pct(vp, 50)
    print(
        f"bench/run.py {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"run_workers {cfg.run_workers} (default), load {load_before[0]:.2f} before, "
        f"{load_burst[0]:.2f} before the burst, {load_after[0]:.2f} after; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print()
    print(f"latency, {args.rounds} rounds, interleaved ({latency_wall:.0f} s): POST → ended, output read")
    print(line("podman run --rm", pp))
    print(line("orch hello (runc)", hp))
    print(line("orch hello (gvisor)", gp))
    print(line("orch hello (runc, no net)", np_))
    print(line("orch deps (cached)", dp))
    print(line("orch deps, not imported", qp))
    print(line("orch six in the bundle", vp))
    print(line("orch hello, back to back", in_a_row))
    print(f"  back to back / interleaved hello, p50: {pct(in_a_row, 50) / h50:.2f}x")
    calm = [w for w, ok in QUIET_WAITS if ok]
    print(
        f"  between steps: waited {1000 * sum(w for w, _ in QUIET_WAITS) / max(len(QUIET_WAITS), 1):.0f} ms"
        f" on average for a quiet machine; {len(QUIET_WAITS) - len(calm)} of {len(QUIET_WAITS)} waits"
        " ended at the 1 s bound"
    )
    print("  by the server's stamps, mean ms: POST → queued_at | queued_at → finished_at | → end seen")
    for k, label in (
        ("hello", "runc"),
        ("hello-gvisor", "gvisor"),
        ("hello-nonet", "no net"),
        ("deps", "deps"),
        ("deps-quiet", "deps-q"),
        ("vendored", "bundled"),
    ):
        if s := server_side[k]:
            front, middle, back = (statistics.mean(x[i] for x in s) * 1000 for i in range(3))
            mid50 = pct([x[1] for x in s], 50) * 1000
            print(f"    {label:<7} {front:6.1f} | {middle:6.1f} (p50 {mid50:6.1f}) | {back:6.1f}")
    print(f"  deps: first run (installs) {first_deps:.2f} s, second {warm_deps:.2f} s")
    print(f"  failed runs {len(failures)}")
    for why in failures:
        print(f"    {why}")
    print()
    rate = b.n / b.wall if b.wall else 0.0
    fin = sorted(b.finished)
    steady = float("nan")
    if len(fin) >= 10:
        lo, hi = round(0.1 * (len(fin) - 1)), round(0.9 * (len(fin) - 1))
        if fin[hi] > fin[lo]:
            steady = (hi - lo) / (fin[hi] - fin[lo])
    print(f"throughput: {b.n} hello runs submitted at once by {b.clients} clients")
    print(
        f"  all POSTs answered in {b.post_wall:.2f} s; all ended in {b.wall:.2f} s: {rate:.1f} runs/s; "
        f"steady (10th→90th finish) {steady:.1f} runs/s"
    )
    if b.latencies:
        print(line("each run, POST → ended", b.latencies))
    print(f"  failures {len(b.failures)}")
    print(
        f"  the machine: python3 -c pass, 2 at a time, {speed[0]:.0f} starts/s before and "
        f"{speed[1]:.0f} after; the burst's runs/s are {rate / statistics.mean(speed) * 100:.1f}% of that"
    )
    for why in b.failures[:10]:
        print(f"    {why}")
    print()
    print(
        "where the time goes: the server's orch_run_phase_seconds, mean ms per run"
        " (p50 ~ p99 from the buckets)"
    )
    columns = [
        ("runc", phases["hello"], hp),
        ("gvisor", phases["hello-gvisor"], gp),
        ("no net", phases["hello-nonet"], np_),
        ("deps", phases["deps"], dp),
    ]
    columns.append(("burst", burst_phases, b.latencies))
    print("  phase     " + "".join(f"{k:>22}" for k, _, _ in columns))
    for p in PHASES:
        cells = "".join(
            f"{ph.mean_ms(p):8.1f} ({ph.quantile_ms(p, 0.5):5.0f}~{ph.quantile_ms(p, 0.99):5.0f})"
            for _, ph, _ in columns
        )
        print(f"  {p:<10}{cells}")
    totals = [sum(ph.mean_ms(p) for p in PHASES) for _, ph, _ in columns]
    print("  sum       " + "".join(f"{t:8.1f}{'':14}" for t in totals))
    print(
        "  client    "
        + "".join(f"{(statistics.mean(v) * 1000 if v else float('nan')):8.1f}{'':14}" for _, _, v in columns)
    )
    print(
        "  beyond    "
        + "".join(
            f"{(statistics.mean(v) * 1000 if v else float('nan')) - t:8.1f}{'':14}"
            for (_, _, v), t in zip(columns, totals, strict=True)
        )
    )
    print("  (beyond: what the client waited outside the phases: HTTP, the follower's wake-up, gaps)")
    cpu_cells = []
    for kind in ("hello", "hello-gvisor", "hello-nonet", "deps", "burst"):  # the columns above
        runs = len(cpus[kind]) if kind != "burst" else b.n
        own, children = (sum(c[i] for c in cpus[kind]) * 1000 / max(runs, 1) for i in range(2))
        cpu_cells.append(f"{own:6.0f} +{children:5.0f}{'':9}")
    print("  cpu ms    " + "".join(cpu_cells))
    print("  (cpu: the server's own + its children's (runtime, sandbox, CNI, podman), per run)")
    print()
    print("goals (issue 12)")
    goals = [
        (f"hello p50 / podman run p50     {h50 / p50:6.2f}×   (goal ≤ 0.3×)", h50 / p50 <= 0.3),
        (f"hello p99 / its own p50        {h99 / h50:6.2f}×   (goal ≤ 2×)", h99 / h50 <= 2),
        (f"burst runs/s                   {rate:6.1f}    (goal ≥ 20)", rate >= 20),
        (f"burst failures                 {len(b.failures):6d}    (goal 0)", not b.failures),
        (f"gvisor p50 / podman run p50    {g50 / p50:6.2f}×   (goal ≤ 1×)", g50 / p50 <= 1),
        (f"deps (cached) p50 / hello p50  {d50 / h50:6.2f}×   (goal ≤ 1.1×)", d50 / h50 <= 1.1),
    ]
    for text, ok in goals:
        print(f"  {text}  {verdict(ok)}")
    print(
        f"  (deps p50 / the same agent with six.py in its bundle, no requirements.txt {d50 / v50:.2f}×;"
        f" deps not imported / hello {q50 / h50:.2f}×: what the platform adds for cached dependencies;"
        " the deps agent also pays python importing six)"
    )


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        sys.exit(f"bench failed: {e}")
