"""A throwaway orch platform for the benchmarks: a server on its own ORCH_HOME, and its CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from orch import config

ORCH = str(Path(sys.executable).with_name("orch"))


# `orch server` from the tree on PYTHONPATH (another checkout's `src`, to compare before and after).
SERVE = "import sys; from orch.cli.main import main; sys.argv[0] = 'orch'; main()"


def start_server(
    home: Path, database_url: str | None = None, *, log: Path | None = None, src: str | None = None
) -> subprocess.Popen[bytes]:
    """Start `orch server` on `home` (a free loopback port; its SQLite file, or `database_url`)
    and wait until it answers. `log` keeps its output (a failed run's traceback is there); `src`
    runs another checkout's tree instead of this one."""
    env = {**os.environ, "ORCH_HOME": str(home)}
    if database_url:
        env["ORCH_DATABASE_URL"] = database_url
    command = [ORCH]
    if src:
        env["PYTHONPATH"] = src
        command = [sys.executable, "-c", SERVE]
    with open(log or os.devnull, "wb") as sink:
        proc = subprocess.Popen(
            [*command, "server", "--port", "0", "--services-port", "0"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            url = config.load(home, environ={}).url
            if url and httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    said = log.read_text(errors="replace")[-3000:] if log else ""
    sys.exit(f"the server did not start\n{said}".strip())


def cli(home: Path, *args: str) -> str:
    """Run the CLI on `home`; stop the benchmark with its output if it fails."""
    env = {**os.environ, "ORCH_HOME": str(home)}
    proc = subprocess.run([ORCH, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stdout + proc.stderr)
    return proc.stdout
