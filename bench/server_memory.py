"""Server memory benchmark: does a long-running server's memory stay flat under work?

One real server (a fresh ORCH_HOME under /tmp, `orch server --port 0`, default settings), driven
through the platform's Python client by a few threads, as a user's programs would:

- runs: hello runs (POST, `run.wait()`, its own input printed back), in batches;
- sandboxes on demand: create, one command, one file written and read back, removal, in batches
  (4 at a time: a workspace holds at most 5 open by default).

The baseline is the server itself in the same run: its resident memory (RSS, /proc) after a
warm-up batch of each kind, when its caches, pools and warm sandboxes exist. After each batch the
bench prints the RSS and its ratio to that baseline; at the end the growth per 1000 runs and per
100 sandboxes over the second half of the batches (a leak grows there; a cache that fills up does
not). A server that keeps something per run or per sandbox shows up as a ratio that climbs with
every batch.

Usage: .venv/bin/python bench/server_memory.py [BATCHES] [--runs N] [--sandboxes M] [--clients K]
       (as root, after scripts/setup; BATCHES defaults to 8, N to 500, M to 50, K to 8)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from local_platform import cli, start_server

from orch import config
from orch.client import Client

HELLO = "import os\nprint(os.environ['ORCH_INPUT'])\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Clients:
    """One `orch.Client` per thread (as each of a user's programs has its own)."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.local = threading.local()
        self.made: list[Client] = []
        self.lock = threading.Lock()

    def get(self) -> Client:
        client: Client | None = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = Client(self.cfg.url, self.cfg.token, timeout=120)
            with self.lock:
                self.made.append(client)
        return client

    def close(self) -> None:
        for client in self.made:
            client.close()


def runs(clients: Clients, pool: ThreadPoolExecutor, n: int) -> int:
    """`n` hello runs; return how many failed or printed another input than their own."""

    def one(i: int) -> bool:
        text = f"mem-{i}-{uuid.uuid4().hex}"
        run = clients.get().runs.create("hello", text)
        run.wait()
        return run.status == "succeeded" and run.stdout.strip() == text

    return sum(not ok for ok in pool.map(one, range(n)))


def sandboxes(clients: Clients, pool: ThreadPoolExecutor, n: int) -> int:
    """`n` sandboxes on demand, each: created, a command, a file written and read, removed;
    return how many failed."""

    def one(i: int) -> bool:
        text = f"sb-{i}-{uuid.uuid4().hex}"
        with clients.get().sandboxes.create(memory="128Mi", timeout=120) as sandbox:
            said = sandbox.exec(["echo", text])
            sandbox.write_file("/home/user/note.txt", text)
            return said.stdout.strip() == text and sandbox.read_file("/home/user/note.txt") == text.encode()

    return sum(not ok for ok in pool.map(one, range(n)))


def growth(deltas: list[float], done: int, per: int) -> float:
    """MiB per `per` units over the second half of the batches: `deltas` are the RSS changes the
    batches of one kind made (measured around them), `done` the units in all of them."""
    half = deltas[len(deltas) // 2 :]
    return sum(half) / (done * len(half) / len(deltas)) * per if done else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("batches", nargs="?", type=int, default=8, help="batches of each kind (default 8)")
    parser.add_argument("--runs", type=int, default=500, help="runs per batch (default 500)")
    parser.add_argument("--sandboxes", type=int, default=50, help="sandboxes per batch (default 50)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-bench-memory-") as tmp:
        home = Path(tmp) / "home"
        agent = Path(tmp) / "hello"
        agent.mkdir()
        (agent / "main.py").write_text(HELLO)
        server = start_server(home)
        try:
            cli(home, "publish", str(agent), "--name", "hello")
            cfg = config.load(home, environ={})
            clients = Clients(cfg)
            # A workspace holds at most 5 sandboxes open (max_sandboxes): 4 at a time.
            with ThreadPoolExecutor(args.clients) as pool, ThreadPoolExecutor(min(args.clients, 4)) as held:
                started = time.monotonic()
                failed = runs(clients, pool, args.runs) + sandboxes(clients, held, args.sandboxes)
                base = rss_mib(server.pid)
                print(f"server memory: {args.batches} batches, each {args.runs} hello runs")
                print(f"({args.clients} at a time) and {args.sandboxes} sandboxes on demand (4 at a time)")
                print(f"  baseline (after a warm-up batch of each): RSS {base:.1f} MiB")
                print(f"{'runs':>9} {'sandboxes':>10} {'RSS MiB':>9} {'× baseline':>11} {'failed':>7}")
                by_runs: list[float] = []  # what each batch of runs added to the RSS
                by_sandboxes: list[float] = []
                now = base
                for batch in range(1, args.batches + 1):
                    failed += runs(clients, pool, args.runs)
                    before, now = now, rss_mib(server.pid)
                    by_runs.append(now - before)
                    failed += sandboxes(clients, held, args.sandboxes)
                    before, now = now, rss_mib(server.pid)
                    by_sandboxes.append(now - before)
                    done = f"{batch * args.runs:>9} {batch * args.sandboxes:>10}"
                    print(f"{done} {now:>9.1f} {now / base:>10.2f}× {failed:>7}")
                print(
                    f"  second half: {growth(by_runs, args.batches * args.runs, 1000):+.2f} MiB per 1000 "
                    f"runs, {growth(by_sandboxes, args.batches * args.sandboxes, 100):+.2f} MiB per 100 "
                    f"sandboxes; {time.monotonic() - started:.0f} s"
                )
            clients.close()
            if failed:
                raise SystemExit(f"{failed} runs or sandboxes failed")
        finally:
            server.terminate()
            server.wait(60)


if __name__ == "__main__":
    main()
