"""Real platforms for integration tests: `orch server` processes on real Podman and SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from orch import config
from orch.engine import PodmanEngine
from orch.sandbox import runc

ORCH = str(Path(sys.executable).with_name("orch"))


@dataclass
class Server:
    """One platform: an ORCH_HOME, and the server process started on it (if running)."""

    home: Path
    proc: subprocess.Popen[bytes] | None = None
    settings: dict[str, str] = field(default_factory=dict)  # ORCH_* variables for the server and CLI
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.home / "server.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        return {**env, **self.settings, "ORCH_HOME": str(self.home), "COLUMNS": "200", "NO_COLOR": "1"}

    def start(self, timeout: float = 60) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cfg_path = self.home / "config.toml"
        before = cfg_path.stat().st_mtime_ns if cfg_path.exists() else 0
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [ORCH, "server", "--port", "0", "--services-port", "0"],
                env=self.env,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            if cfg_path.exists() and cfg_path.stat().st_mtime_ns != before:
                try:
                    if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return str(config.load(self.home, environ={}).url)

    @property
    def services_url(self) -> str:
        """The services' origin, as the server's log says it."""
        said = [line for line in self.log.read_text().splitlines() if line.startswith("services on ")]
        return said[-1].removeprefix("services on ").split("/services/")[0]

    def services(self) -> httpx.Client:
        """A client of the services' origin, with the workspace token (private services need it)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.services_url, headers=headers, timeout=30)

    @property
    def token(self) -> str:
        return str(config.load(self.home, environ={}).token)

    @property
    def instance(self) -> str:
        import hashlib

        return hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:12]

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ORCH, *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def get(self, path: str, **kwargs: object) -> dict:  # type: ignore[type-arg]
        with self.api() as api:
            resp = api.get(path, **kwargs)  # type: ignore[arg-type]
            return resp.json()  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        engine = PodmanEngine()
        # Services' containers outlive their server: remove them (by label) before their images.
        engine.remove_containers({"org.orch.instance": self.instance})
        runc.sweep(f"orch-{self.instance}-")  # a killed server's sandboxes
        engine.remove_build_leftovers(self.instance)  # of builds a killed server left half-way
        for image in engine.images({"org.orch.instance": self.instance}):
            subprocess.run(["podman", "rmi", "-f", image.id], capture_output=True, check=False)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    servers: list[Server] = []

    def make(name: str = "home") -> Server:
        server = Server(tmp_path / name)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()
        s.cleanup()


@pytest.fixture
def server(make_server) -> Server:  # type: ignore[no-untyped-def]
    s = make_server()
    s.start()
    return s


RUNTIME_ROOT = runc.STATE  # where the launcher keeps its sandboxes (bundles, runtime state)


def sandboxes(run_id: str) -> list[str]:
    """What of a run's sandbox exists: Podman containers (its dependency install) and the
    launcher's runc containers (the sandbox itself)."""
    podman = subprocess.run(
        ["podman", "ps", "-a", "-q", "--filter", f"label=org.orch.run={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return podman + [name for name, _ in runtime_containers(run_id)]


def runtime_sandboxes(prefix: str) -> list[str]:
    """The launcher's sandboxes named `prefix`..., in either runtime, in any state."""
    return [name for _, name in _listed(prefix)]


def _listed(prefix: str) -> list[tuple[runc.Launcher, str]]:
    launchers = runc.launchers(prefix).values()
    return [(launcher, name) for launcher in launchers for name in launcher.containers(prefix)]


def runtime_containers(run_id: str) -> list[tuple[str, list[str]]]:
    """(name, the runtime command that knows it) of the launcher's sandboxes of `run_id`: named
    after it, or started ahead of need and handed the run (its bundle says which)."""
    return [
        (name, [launcher.runtime, "--root", str(launcher.runtime_root)])
        for launcher, name in _listed("orch-")
        if name.endswith(run_id) or serves(name).endswith(run_id)
    ]


def serves(name: str) -> str:
    """The run's sandbox name a warm sandbox was handed ("" when none: waiting, or a cold one)."""
    try:
        return Path(RUNTIME_ROOT, "sandboxes", name, runc.FOR).read_text()
    except OSError:
        return ""


def waiting_sandboxes(prefix: str) -> list[str]:
    """The launcher's sandboxes named `prefix`... that wait, started ahead of need, for a run."""
    return [n for n in runtime_sandboxes(prefix) if n.startswith(f"{prefix}warm-") and not serves(n)]


def sandbox_address(run_id: str) -> str:
    """The address of a running run's sandbox on the sandbox network, as the host reaches it."""
    ((name, command),) = runtime_containers(run_id)
    state = subprocess.run([*command, "state", name], capture_output=True, text=True, check=True)
    pid = json.loads(state.stdout)["pid"]
    if pid <= 0:  # runsc names no host process of the sandbox: its /etc/hosts has its address
        hosts = Path(RUNTIME_ROOT, "sandboxes", name, "hosts").read_text().splitlines()
        return hosts[-1].split()[0]
    shown = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return shown[shown.index("inet") + 1].split("/")[0]
