"""CLI start-up benchmark, side by side in one run on this machine (noisy machines: read the ratios).

Each command below is started as its own process against a live server (`orch server` on a
throwaway ORCH_HOME, with one agent published and run once), interleaved with `python -c pass` of
the same interpreter, N rounds: the medians of wall time and of CPU time (user + system of the
child), the ratio to `python -c pass`, and the command's "own" time (its median minus python's).
Output goes to /dev/null (piped: plain text), except for the "(terminal)" row, whose standard
output is a pseudo-terminal (rich's tables and colours).

    orch --version            the entry point and its parser, no noun imported
    orch env --help           one noun's module and help formatting (typer's, with rich)
    orch env list             a GET and a table: the lightest command that talks to the server
    orch env list (terminal)  the same on a terminal
    orch runs list            another noun, the same shape
    orch runs show RUN        one run: what `orch run` does besides waiting for the run
    orch run hello            a real run of a hello agent, followed to its end: its CPU is the
                              CLI's own; its wall time includes the run itself
    orch run --help           `orch run`'s module and help formatting
    orch --help               lists every command, so imports every noun's module

With `--against SRC`, the same commands also run with another checkout's `src` first on
PYTHONPATH (e.g. `git archive HEAD src | tar -x -C /tmp/old`, then `--against /tmp/old/src`),
interleaved with the others: before and after in one run.

Bytecode: the children run without PYTHONDONTWRITEBYTECODE, and one warm-up round writes the
.pyc files, so the figures are those of an installed orch rather than of a checkout that
compiles every module at each start.

Usage: .venv/bin/python bench/cli_start.py [N] [--against SRC]   (N defaults to 20)
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from local_platform import ORCH, cli, start_server

RUN = "RUN"  # stands for the id of the run made at the start
TERMINAL = " (terminal)"
COMMANDS = (
    ("orch --version", ["--version"]),
    ("orch env --help", ["env", "--help"]),
    ("orch env list", ["env", "list"]),
    ("orch env list" + TERMINAL, ["env", "list"]),
    ("orch runs list", ["runs", "list"]),
    ("orch runs show RUN", ["runs", "show", RUN]),
    ("orch run hello", ["run", "hello"]),
    ("orch run --help", ["run", "--help"]),
    ("orch --help", ["--help"]),
)


class Failed(Exception):
    pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # the terminal's other end closed
        pass
    finally:
        os.close(fd)


def timed(argv: list[str], env: dict[str, str], terminal: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds of one process (its standard output a pseudo-terminal if asked)."""
    stdout: int = subprocess.DEVNULL
    if terminal:
        master, stdout = pty.openpty()
        reader = threading.Thread(target=_drain, args=(master,), daemon=True)
        reader.start()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    if terminal:
        os.close(stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else b""
    if terminal:
        reader.join(10)
    if status:
        lines = err.decode(errors="replace").splitlines()
        raise Failed(next((line for line in reversed(lines) if any(c.isalnum() for c in line)), ""))
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=20)
    parser.add_argument("--against", type=Path, help="another checkout's src directory")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "COLUMNS")}
    env = {
        k: v
        for k, v in env.items()
        if not k.startswith("ORCH_") and k not in ("FORCE_COLOR", "TTY_COMPATIBLE")
    }
    cases: list[tuple[str, list[str], dict[str, str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"], env)
    ]
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        home = Path(tmp) / "home"
        env = {**env, "ORCH_HOME": str(home)}
        variants = [("", env)]
        if args.against:
            src = str(args.against.resolve())
            variants.append((" [against]", {**env, "PYTHONPATH": src}))
        server = start_server(home)
        try:
            agent = Path(tmp) / "hello"
            agent.mkdir()
            (agent / "main.py").write_text("print('hello')\n")
            cli(home, "publish", str(agent))
            run_id = cli(home, "run", "hello", "--detach").strip()
            cli(home, "runs", "logs", run_id, "--follow")  # it has ended: `runs show` shows it whole
            for label, argv in COMMANDS:
                for suffix, variant_env in variants:
                    cases.append(
                        (label + suffix, [ORCH, *(run_id if a == RUN else a for a in argv)], variant_env)
                    )
            for case in list(cases):  # warm-up: bytecode written, page cache primed
                try:
                    timed(case[1], case[2], TERMINAL in case[0])
                except Failed as e:  # e.g. an option an older checkout lacks: left out
                    print(f"left out {case[0]!r}: {e}")
                    cases.remove(case)
            walls: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            cpus: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            for _ in range(args.n):
                for label, argv, case_env in cases:
                    wall, cpu = timed(argv, case_env, TERMINAL in label)
                    walls[label].append(wall)
                    cpus[label].append(cpu)
        finally:
            server.terminate()
            server.wait(30)
    base_wall = statistics.median(walls["python -c pass"])
    base_cpu = statistics.median(cpus["python -c pass"])
    print(f"CLI start, {args.n} rounds, interleaved (medians; own = command - python -c pass)")
    print(f"  {'':34} {'wall':>8} {'cpu':>8} {'ratio':>7} {'own wall':>9} {'own cpu':>8}")
    for label, _, _ in cases:
        wall, cpu = statistics.median(walls[label]), statistics.median(cpus[label])
        print(
            f"  {label:34} {wall * 1000:6.0f}ms {cpu * 1000:6.0f}ms {wall / base_wall:7.2f}"
            f" {(wall - base_wall) * 1000:7.0f}ms {(cpu - base_cpu) * 1000:6.0f}ms"
        )


if __name__ == "__main__":
    main()
