"""A machine without a piece that sandboxes need: the check names it, the server says so once, a
run fails with that sentence, and `scripts/setup` puts the piece back so a real agent runs.

This proves the install step itself, not the machine CI happens to run on: a piece installed by
hand once would otherwise hide a setup script that forgets it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from orch.config import pid_space
from orch.engine import PodmanEngine
from tests.integration.conftest import ORCH, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "catatonit"  # what a fresh machine lacked (`podman run --init` needs it)
# Only `scripts/setup --dev` installs these: wrk (bench/service.py measures with it) and Debian's
# docker-registry (the registry tests run one), whose system service setup must not start.
DEV_PACKAGES = ("wrk", "docker-registry")
OLD_RUNSC = "0.0~20221219.0-2+b3"  # bookworm's own, which a fresh machine gets from apt
BACKPORTS = Path("/etc/apt/sources.list.d/orch-bookworm-backports.sources")  # scripts/setup's
CONTAINERS_CONF = Path("/etc/containers/containers.conf")  # scripts/setup's
# The one an earlier scripts/setup wrote: nproc 4,096, which one run's threads could take whole
# from every other sandbox (they all run as uid 1000; docs/trust.md "One host uid").
OLD_CONTAINERS_CONF = """# written by orch scripts/setup
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def _installed(package: str) -> bool:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return "install ok installed" in res.stdout


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", *args], env=env, capture_output=True, check=True, timeout=600)


@contextmanager
def _no_service_starts() -> Iterator[None]:
    """Packages installed meanwhile start no system service (Debian's policy-rc.d, exit 101)."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def _version(package: str) -> str:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return res.stdout.strip()


@pytest.fixture
def without_package():  # type: ignore[no-untyped-def]
    """A machine as apt leaves it: no catatonit (nor the dev packages), and bookworm's own
    runsc rather than the backport scripts/setup installs; and the containers.conf an earlier
    scripts/setup wrote."""
    assert _installed(PACKAGE), f"{PACKAGE} should be installed by scripts/setup before the suite"
    for package in DEV_PACKAGES:
        assert _installed(package), f"{package} should be installed by scripts/setup --dev before the suite"
    runsc = _version("runsc")
    # The apt source scripts/setup writes for the backport goes too: setup must write it again.
    ours = BACKPORTS.read_bytes() if BACKPORTS.exists() else None
    BACKPORTS.unlink(missing_ok=True)
    conf = CONTAINERS_CONF.read_bytes()
    assert conf.startswith(b"# written by orch scripts/setup"), "scripts/setup should have written it"
    CONTAINERS_CONF.write_text(OLD_CONTAINERS_CONF)
    _apt("remove", "-y", "-qq", PACKAGE, *DEV_PACKAGES)
    _apt("install", "-y", "-qq", "--allow-downgrades", "--no-install-recommends", f"runsc={OLD_RUNSC}")
    assert not any(map(_installed, (PACKAGE, *DEV_PACKAGES))) and _version("runsc") == OLD_RUNSC
    try:
        yield PACKAGE
    finally:
        # Whatever happened, the rest of the suite needs them back.
        for package in (PACKAGE, *DEV_PACKAGES):
            if not _installed(package):
                with _no_service_starts():  # as scripts/setup installs docker-registry
                    _apt("install", "-y", "-qq", "--no-install-recommends", package)
        if ours is not None and not BACKPORTS.exists():
            BACKPORTS.write_bytes(ours)
            _apt("update", "-qq")
        if _version("runsc") != runsc:
            _apt("install", "-y", "-qq", "--no-install-recommends", "-t", "bookworm-backports", "runsc")
        if CONTAINERS_CONF.read_bytes() != conf:
            CONTAINERS_CONF.write_bytes(conf)


def _pids_budget(server: Server) -> int:
    """The server's run_pids, from /metrics: by default half the sandboxes' RLIMIT_NPROC, which
    it reads from containers.conf."""
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(r'^orch_run_pids\{state="budget"\} (\S+)$', metrics, re.M)
    assert found, metrics[-2000:]
    return int(float(found[1]))


def _hello(tmp_path: Path) -> Path:
    agent = tmp_path / "hello"
    agent.mkdir(parents=True)
    (agent / "main.py").write_text("import os\nprint('hello', os.environ['ORCH_INPUT'])\n")
    return agent


@pytest.mark.serial  # nothing else may run a sandbox while catatonit is gone
def test_a_removed_package_is_named_then_setup_puts_it_back_and_a_run_works(
    without_package: str, make_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server()
    server.home.mkdir(parents=True)

    # The check, on demand: one sentence naming the piece and its package; exit 1.
    res = server.cli("admin", "check")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "lacks catatonit" in res.stderr and "apt-get install catatonit" in res.stderr
    assert "Traceback" not in res.stderr

    # The server says so once, at start, and a run fails with that sentence (not podman's 125).
    server.start()
    deadline = time.monotonic() + 60
    while "no sandbox can start" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = server.log.read_text()
    assert log.count("no sandbox can start") == 1 and "apt-get install catatonit" in log
    assert _pids_budget(server) == 2048  # half the old file's nproc
    assert server.cli("publish", str(_hello(tmp_path)), "--name", "hello").returncode == 0
    res = server.cli("run", "hello", "--input", '{"a": 1}', "--json")
    run = json.loads(res.stdout)
    assert res.returncode == 1 and run["status"] == "failed"
    assert "catatonit" in run["reason"] and run["exit_code"] is None
    server.stop()

    # Ray (the cluster extra, which --dev installs for the cluster's tests) goes too.
    venv_python = str(REPO / ".venv" / "bin" / "python")
    removed = subprocess.run(
        [venv_python, "-m", "pip", "uninstall", "-y", "-q", "ray"], capture_output=True, text=True
    )
    assert removed.returncode == 0, removed.stderr
    assert subprocess.run([venv_python, "-c", "import ray"], capture_output=True).returncode != 0

    # The README's setup puts it back (and ends with the same check, which passes).
    setup = subprocess.run(
        [str(REPO / "scripts" / "setup"), "--dev"], capture_output=True, text=True, timeout=900, check=False
    )
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert _installed(PACKAGE)
    assert "This machine can run orch's sandboxes and builds." in setup.stdout
    ray = subprocess.run(
        [venv_python, "-c", "import ray; print(ray.__version__)"], capture_output=True, text=True
    )
    assert ray.stdout.startswith("2.60."), ray.stderr

    assert _version("runsc") != OLD_RUNSC and "bpo12" in _version("runsc")  # the backport
    assert BACKPORTS.read_text().startswith("# written by orch scripts/setup")
    # containers.conf again as this setup writes it: nproc 32,768, or the hard limit when lower.
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if hard == resource.RLIM_INFINITY or hard > 32768 else hard
    assert f'"nproc={nproc}:{nproc}"' in CONTAINERS_CONF.read_text()

    # A fresh server runs a real agent, under runc and under gVisor, with the new file's budget.
    server.start()
    assert _pids_budget(server) == min(nproc, pid_space()) // 2
    gvisor = _hello(tmp_path / "g")
    (gvisor / "orch.yaml").write_text("name: hello-gvisor\nisolation: gvisor\n")
    assert server.cli("publish", str(gvisor)).returncode == 0
    for agent, isolation in (("hello", "runc"), ("hello-gvisor", "gvisor")):
        res = server.cli("run", agent, "--input", '{"a": 1}', "--json")
        run = json.loads(res.stdout)
        assert res.returncode == 0, res.stdout + res.stderr
        assert (run["status"], run["isolation"]) == ("succeeded", isolation)
        assert run["stdout"] == 'hello {"a": 1}\n'
    # The dev package is back and measures (as bench/service.py uses it).
    measured = subprocess.run(
        ["wrk", "-t1", "-c1", "-d1s", f"{server.url}/healthz"], capture_output=True, text=True, timeout=30
    )
    assert measured.returncode == 0 and "Requests/sec:" in measured.stdout, measured.stdout + measured.stderr
    # The registry is back, and its system service was not started (it would listen on every
    # interface): the tests start their own, on 127.0.0.1.
    version = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and "registry" in version.stdout, version.stdout + version.stderr
    running = subprocess.run(["pgrep", "-x", "docker-registry"], capture_output=True, text=True)
    assert running.returncode == 1, f"a system registry runs: {running.stdout}"


def test_admin_check_passes_here_and_says_what_it_proved(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server()
    server.home.mkdir(parents=True)
    res = server.cli("admin", "check", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] is True and report["problem"] is None
    steps = [s["step"] for s in report["steps"]]
    assert steps[-2:] == ["a sandbox (init, limits, a root of its own, sandbox network)", "a build step"]
    # Nothing of the check is left behind: no container, no image.
    left = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label=org.orch.instance={server.instance}", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout.strip() == ""
    # The engine's listing: a plain `podman images` fails when another test removes an image
    # while it lists (Podman lists, then reads each image); the engine lists again then.
    assert PodmanEngine().images({"org.orch.instance": server.instance}) == []


def test_piped_tables_print_whole_rows(server: Server, tmp_path: Path) -> None:
    """`orch agents list > file`: no row is cut at 80 columns (COLUMNS unset, stdout a pipe)."""
    long_name = "an-agent-whose-name-alone-takes-most-of-eighty-columns-" + "x" * 8  # 63, the most
    assert server.cli("publish", str(_hello(tmp_path)), "--name", long_name).returncode == 0
    env = {k: v for k, v in server.env.items() if k != "COLUMNS"}
    res = subprocess.run([ORCH, "agents", "list"], env=env, capture_output=True, text=True, check=True)
    (row,) = [line for line in res.stdout.splitlines() if long_name in line]
    assert len(row) > 80 and "…" not in res.stdout
