"""Hostile agents run through a real server on real runtimes (fixtures shared with integration):
every case under each isolation runtime, runc and gVisor (runsc from bookworm-backports, which
scripts/setup installs: bookworm's own 2022 runsc crashed on the fork bomb). One server per
runtime serves the module's cases, each in runs of its own."""

import re
import shutil
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.integration.conftest import Server, make_server  # noqa: F401 - shared fixture


@pytest.fixture(scope="module", params=["runc", "gvisor"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp(f"hostile-{request.param}") / "home")
    s.settings = {"ORCH_ISOLATION": request.param}
    s.start()
    try:
        yield s
        starts = sandbox_starts(s)
        print(f"\n[{request.param}] runs' sandboxes: {starts['warm']:g} warm, {starts['cold']:g} cold")
        # Under runc, hostile agents on one environment and limits share warm sandboxes: the
        # cases ran through handed sandboxes too, not only through cold ones (under gVisor an
        # agent's bundle is part of the key, and each agent here runs once).
        if request.param == "runc" and starts["warm"] + starts["cold"] >= 5:
            assert starts["warm"] > 0, starts
    finally:
        s.stop()
        s.cleanup()


def sandbox_starts(server: Server) -> dict[str, float]:
    """orch_run_sandbox_starts_total by start (warm, cold), from the server's /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.findall(r'^orch_run_sandbox_starts_total\{start="(warm|cold)"\} ([0-9.e+]+)$', text, re.M)
    return {kind: float(value) for kind, value in found}


# What the machine's other work (the other test process building images, say) may write to the
# host's disk while a case runs. A sandbox's write that reached the host's disk would not stop
# there: the bombs write until ENOSPC, tens of GB on the host (64 MiB failed on a busy machine).
HOST_DISK_NOISE = 1024**3


@pytest.fixture
def host_disk_kept() -> Callable[[], None]:
    """A check that the host's disk did not fill since the fixture began."""
    before = shutil.disk_usage("/").free

    def check() -> None:
        now = shutil.disk_usage("/").free
        assert now > before - HOST_DISK_NOISE, f"the host's disk lost {(before - now) >> 20} MiB"

    return check
