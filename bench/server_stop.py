"""Server stop benchmark: how long `orch server` takes from SIGTERM to its exit.

Each round starts a fresh server (its own ORCH_HOME under /tmp) twice, in a shuffled order, and
stops each with SIGTERM, timing the signal to the process's end (waited on as its parent):

- idle: nothing done but starting (the baseline: uvicorn's shutdown and the workers' stop);
- busy: one run under runc and one under gVisor (so both runtimes have warm sandboxes) and one
  sandbox on demand held open, which the stop removes.

With `--against SRC` (another checkout's `src`) the same two kinds also run on that tree, in the
same rounds, so a change's before and after come from one run. Printed: the median and the
slowest of each, and busy / idle.

Usage: .venv/bin/python bench/server_stop.py [ROUNDS] [--against SRC]
       (as root, after scripts/setup; ROUNDS defaults to 5)
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import tempfile
import time
from pathlib import Path

from local_platform import cli, start_server

HELLO = "print('hello')\n"


def stop_time(kind: str, src: str | None, agents: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="orch-bench-stop-") as tmp:
        home = Path(tmp) / "home"
        server = start_server(home, src=src)
        try:
            if kind == "busy":
                for name in ("hello", "hello-gvisor"):
                    cli(home, "publish", str(agents / name), "--name", name)
                    cli(home, "run", name)
                cli(home, "sandbox", "create", "--json")
            time.sleep(2)  # the warm sandboxes replaced after the runs are up
            began = time.perf_counter()
            server.send_signal(signal.SIGTERM)
            server.wait(120)
            return time.perf_counter() - began
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--against", help="another checkout's src, measured in the same rounds")
    parser.add_argument("--seed", type=int, default=3, help="seed of the rounds' order")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    trees: dict[str, str | None] = {"": None}
    if args.against:
        trees[" [against]"] = str(Path(args.against).resolve())
    with tempfile.TemporaryDirectory(prefix="orch-bench-stop-agents-") as tmp:
        agents = Path(tmp)
        for name, manifest in (("hello", ""), ("hello-gvisor", "isolation: gvisor\n")):
            (agents / name).mkdir()
            (agents / name / "main.py").write_text(HELLO)
            (agents / name / "orch.yaml").write_text(f"name: {name}\n{manifest}")
        steps = [(kind, tag) for kind in ("idle", "busy") for tag in trees]
        times: dict[tuple[str, str], list[float]] = {step: [] for step in steps}
        for _ in range(args.rounds):
            rng.shuffle(steps)
            for kind, tag in steps:
                times[kind, tag].append(stop_time(kind, trees[tag], agents))
    print(f"server stop, SIGTERM to exit: {args.rounds} rounds")
    print(f"  {'':<22} {'median':>8} {'slowest':>8}")
    for tag in trees:
        for kind in ("idle", "busy"):
            got = times[kind, tag]
            print(f"  {kind + tag:<22} {statistics.median(got):>7.2f}s {max(got):>7.2f}s")
        ratio = statistics.median(times["busy", tag]) / statistics.median(times["idle", tag])
        print(f"  {'busy / idle' + tag:<22} {ratio:>7.2f}×")


if __name__ == "__main__":
    main()
