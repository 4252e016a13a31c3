"""What one control plane sustains, on PostgreSQL and on SQLite, side by side (docs/scale.md).

1. Claims: ROWS queued runs in the store, claimed by K threads per server as run workers claim
   them (`workers.runs.claim`: a conditional UPDATE, `FOR UPDATE SKIP LOCKED` on PostgreSQL), by
   one server and by two servers (two Store objects, as two `orch server` processes on one
   database would): claims per second, each row claimed once.
2. Status calls: a real `orch server` on each database, one ended run, then `wrk` on
   GET /v1/runs/RUN (the call `orch run` and a client's wait make most), over 16 connections:
   requests per second and p50/p99; GET /healthz (no store) for scale.

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
from sqlalchemy import select

from orch import config
from orch.engine.fake import FakeEngine
from orch.models import RunStatus, new_id
from orch.services import workspaces
from orch.services.platform import Platform
from orch.store import Store
from orch.store.schema import RunRow, WorkspaceRow
from orch.workers import runs as run_worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' PostgreSQL helper
from tests.postgres import running

THREADS = 4  # per server: claims at once


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


if __name__ == "__main__":
    main()
