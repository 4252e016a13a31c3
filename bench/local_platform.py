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


def start_server(home: Path, database_url: str | None = None) -> subprocess.Popen[bytes]:
    """Start `orch server` on `home` (a free loopback port; its SQLite file, or `database_url`)
    and wait until it answers."""
    env = {**os.environ, "ORCH_HOME": str(home)}
    if database_url:
        env["ORCH_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [ORCH, "server", "--port", "0", "--services-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            url = config.load(home, environ={}).url
            if url and httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit("the server did not start")


def cli(home: Path, *args: str) -> str:
    """Run the CLI on `home`; stop the benchmark with its output if it fails."""
    env = {**os.environ, "ORCH_HOME": str(home)}
    proc = subprocess.run([ORCH, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stdout + proc.stderr)
    return proc.stdout
