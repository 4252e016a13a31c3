"""A sandbox on demand's /tmp is part of its disk under either isolation runtime: filling it
ends in ENOSPC at the disk's size (half the memory limit) and the sandbox stays running. Under
gVisor /tmp was runsc's own unbounded tmpfs: 200 MiB went into a 128 MiB disk, then the sandbox
was killed at its memory limit and marked failed, its files lost (found by a tester)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", params=["runc", "gvisor"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp(f"tmp-{request.param}") / "home")
    s.settings = {"ORCH_ISOLATION": request.param}
    s.start()
    try:
        yield s
    finally:
        s.stop()
        s.cleanup()


def test_a_full_tmp_is_enospc_and_the_sandbox_survives(server: Server) -> None:
    res = server.cli("sandbox", "create", "--json", "--memory", "256Mi")
    assert res.returncode == 0, res.stdout + res.stderr
    sb = json.loads(res.stdout)
    assert sb["isolation"] == server.settings["ORCH_ISOLATION"]
    with server.api() as api:
        resp = api.post(
            f"/v1/sandboxes/{sb['id']}/exec",
            json={"command": ["sh", "-c", "dd if=/dev/zero of=/tmp/big bs=1M count=200; ls -l /tmp/big"]},
            timeout=300,
        )
    assert resp.status_code == 200, resp.text
    wrote = resp.json()
    assert "No space left on device" in wrote["stderr"], wrote
    size = int(wrote["stdout"].split()[4])
    assert size <= 128 * 2**20, wrote  # the disk: half of 256 MiB, shared with the rest of the root
    res = server.cli(
        "sandbox", "exec", sb["id"], "--", "sh", "-c", "rm /tmp/big && echo alive > /tmp/t && cat /tmp/t"
    )
    assert (res.returncode, res.stdout) == (0, "alive\n"), res.stderr
    assert server.get(f"/v1/sandboxes/{sb['id']}")["status"] == "running"
    assert server.cli("sandbox", "rm", sb["id"]).returncode == 0
