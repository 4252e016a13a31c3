"""What one control plane sustains, on PostgreSQL and on SQLite, side by side (docs/scale.md).

1. Claims: ROWS queued runs in the store, claimed by K threads per server as run workers claim
   them (`workers.runs.claim`: a conditional UPDATE, `FOR UPDATE SKIP LOCKED` on PostgreSQL), by
   one server and by two servers (two Store objects, as two `orch server` processes on one
   database would): claims per second, each row claimed once.
2. Status calls: a real `orch server` on each database, one ended run, then `wrk` on
   GET /v1/runs/RUN (the call `orch run` and a client's wait make most), over 16 connections:
   requests per second and p50/p99; GET /healthz (no store) for scale.
3. What each node adds: 1, 4 and 8 idle cluster nodes (workers/nodes.py `NodeWork`, the fake
   engine, each with its own connection pool as separate machines would have) on PostgreSQL
   for IDLE_SECONDS: the statements and transactions they send a second, and the CPU the
   PostgreSQL server spends on them (its processes' user + system time, from /proc).

PostgreSQL is Debian's, started from its binaries on a throwaway cluster on 127.0.0.1 (as the
tests start it), with fsync and synchronous commits off, so these are the control plane's CPU
costs, not a disk's. Usage: .venv/bin/python bench/control_plane.py [ROWS]  (scripts/setup --dev)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from local_platform import cli, start_server
from service import wrk
from sqlalchemy import event, select

from orch import config
from orch.engine.fake import FakeEngine
from orch.models import RunStatus, new_id
from orch.services import nodes, workspaces
from orch.services.platform import Platform
from orch.store import Store
from orch.store.schema import RunRow, WorkspaceRow
from orch.workers import runs as run_worker
from orch.workers.nodes import NodeWork

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' PostgreSQL helper
from tests.postgres import running

THREADS = 4  # per server: claims at once
IDLE_SECONDS = 10.0
NODES = (1, 4, 8)


def queue_runs(platform: Platform, workspace_id: str, n: int) -> None:
    with platform.store.session() as s:
        s.add_all(
            RunRow(
                id=new_id("run"),
                workspace_id=workspace_id,
                agent_id="agt_bench",
                agent_version_id="ver_bench",
                status=RunStatus.QUEUED.value,
            )
            for _ in range(n)
        )


def claims_per_second(url: str, home: Path, rows: int, servers: int) -> float:
    """`rows` queued runs claimed by THREADS threads on each of `servers` platforms."""
    cfg = config.load(home, environ={}).with_values(database_url=url)
    platforms = [Platform(cfg, Store(url), FakeEngine()) for _ in range(servers)]
    workspaces.bootstrap(platforms[0], "")
    with platforms[0].store.session() as s:
        ws = s.scalars(select(WorkspaceRow.id)).one()
    queue_runs(platforms[0], ws, rows)
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS * servers + 1)

    def worker(p: Platform) -> None:
        start.wait()
        while (row_id := run_worker.claim(p)) is not None:
            with lock:
                claimed.append(row_id)

    threads = [threading.Thread(target=worker, args=(p,)) for p in platforms for _ in range(THREADS)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join(300)
    took = time.perf_counter() - began
    if len(claimed) != rows or len(set(claimed)) != rows:
        sys.exit(f"claims went wrong: {len(claimed)} claimed, {len(set(claimed))} distinct, of {rows}")
    for p in platforms:
        p.store.dispose()
    return rows / took


def status_calls(home: Path, url: str | None, seconds: int) -> dict[str, dict[str, float]]:
    """wrk on GET /v1/runs/RUN and on /healthz of a server on `url` (None: SQLite)."""
    server = start_server(home, url)
    try:
        agent = home.parent / f"{home.name}-hello"
        agent.mkdir()
        (agent / "main.py").write_text("print('hi')\n")
        cli(home, "publish", str(agent), "--name", "hello")
        run_id = json.loads(cli(home, "run", "hello", "--json"))["id"]
        cfg = config.load(home, environ={})
        target = f"{cfg.url}/v1/runs/{run_id}"
        wrk(target, 4, 1, str(cfg.token))  # warm up
        return {
            "GET /v1/runs/RUN": wrk(target, 16, seconds, str(cfg.token)),
            "GET /healthz": wrk(f"{cfg.url}/healthz", 16, seconds),
        }
    finally:
        server.terminate()
        server.wait(30)


def postgres_cpu(data_dir: Path) -> float:
    """CPU seconds (user + system) spent so far by the PostgreSQL server of `data_dir`: its
    postmaster and every backend it forked."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stats[int(proc.name)] = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    main = int((data_dir / "postmaster.pid").read_text().split()[0])
    mine = [fields for pid, fields in stats.items() if pid == main or int(fields[1]) == main]
    return sum(int(f[11]) + int(f[12]) for f in mine) / tick


def idle_nodes(url: str, home: Path, count: int, data_dir: Path) -> dict[str, float]:
    """`count` idle nodes on the store at `url` for IDLE_SECONDS: per second, the statements and
    transactions they send, and the PostgreSQL server's CPU."""
    counted = {"statements": 0, "transactions": 0}
    lock = threading.Lock()

    def statement(*_args: object) -> None:
        with lock:
            counted["statements"] += 1

    def commit(*_args: object) -> None:
        with lock:
            counted["transactions"] += 1

    works: list[NodeWork] = []
    for i in range(count):
        cfg = config.load(home / f"node-{i}", environ={}).with_values(database_url=url)
        platform = Platform(cfg, Store(url), FakeEngine(), node=f"n{i}")
        event.listen(platform.store.db, "before_cursor_execute", statement)
        event.listen(platform.store.db, "commit", commit)
        slots = int(cfg.run_workers)
        me = nodes.Joining(id=f"n{i}", address="127.0.0.1", cpus=2, memory=2**34, slots=slots)
        works.append(NodeWork(platform, me, on_lost=lambda: None))
    try:
        for w in works:
            w.start()
        time.sleep(3.0)  # past the first passes (recovery, registering)
        with lock:
            counted.update(statements=0, transactions=0)
        cpu = postgres_cpu(data_dir)
        began = time.perf_counter()
        time.sleep(IDLE_SECONDS)
        took = time.perf_counter() - began
        cpu = postgres_cpu(data_dir) - cpu
        with lock:
            seen = dict(counted)
    finally:
        for w in works:
            w.stop()
            w.platform.store.dispose()
    return {
        "statements": seen["statements"] / took,
        "transactions": seen["transactions"] / took,
        "cpu": cpu / took,
        "workers": sum(int(w.platform.config.run_workers) for w in works) / count,
    }


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    seconds = 5
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: scripts/setup --dev installs it (Debian's wrk).")
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-cp-"))
    try:
        with running() as pg:
            claims: dict[str, dict[int, float]] = {}
            for name in ("postgresql", "sqlite"):
                claims[name] = {}
                for servers in (1, 2):
                    if name == "postgresql":
                        url = pg.url(pg.create_database())
                    else:
                        url = f"sqlite:///{tempfile.mkdtemp(dir=tmp)}/orch.db"
                        fresh = Store(url)
                        fresh.migrate()
                        fresh.dispose()
                    claims[name][servers] = claims_per_second(url, tmp / f"{name}-{servers}", rows, servers)
            calls = {
                "postgresql": status_calls(tmp / "srv-pg", pg.url(pg.create_database()), seconds),
                "sqlite": status_calls(tmp / "srv-sqlite", None, seconds),
            }
            idle = {
                n: idle_nodes(pg.url(pg.create_database()), tmp / f"nodes-{n}", n, pg.data) for n in NODES
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"control plane, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} after")
    print(f"claims: {rows} queued runs, {THREADS} claiming threads per server")
    for name, by in claims.items():
        print(f"  {name:<11} one server {by[1]:7.0f} claims/s   two servers {by[2]:7.0f} claims/s")
    print(f"status calls: wrk, 16 connections, {seconds} s")
    for name, found in calls.items():
        for what, r in found.items():
            latency = f"p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms"
            print(f"  {name:<11} {what:<18} {r['rps']:7.0f} requests/s   {latency}")
    workers = idle[NODES[0]]["workers"]
    print(f"idle nodes on postgresql, {IDLE_SECONDS:.0f} s (each with {workers:.0f} run workers)")
    for n, r in idle.items():
        print(
            f"  {n} node{'s' if n > 1 else ' '}  {r['statements']:6.0f} statements/s  "
            f"{r['transactions']:5.0f} transactions/s  postgres CPU {r['cpu'] * 1000:4.0f} ms/s   "
            f"per node: {r['statements'] / n:4.0f} statements/s, {r['cpu'] * 1000 / n:3.0f} ms/s CPU"
        )


if __name__ == "__main__":
    main()
