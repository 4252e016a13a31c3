"""A server SIGKILLed while it holds sandboxes on demand open, busy or idle, with and without a
network: after its restart none of them is left on the host (runtime container, init process,
root mounts, bundle, cgroups, network namespace, veth, address reservation), and their records
say they were removed because the server restarted (one line in its log says how many)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from orch.sandbox import cni
from tests.integration.conftest import RUNTIME_ROOT, Server, runtime_sandboxes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CGROUPS = Path("/sys/fs/cgroup")


def test_a_killed_server_leaves_no_sandbox(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server()
    server.start()
    prefix = f"orch-{server.instance}-sb-"
    ids = []
    for args in ((), ("--network",), ("--network", "--timeout", "3600")):
        res = server.cli("sandbox", "create", "--json", *args)
        assert res.returncode == 0, res.stderr
        ids.append(json.loads(res.stdout)["id"])
    with server.api() as api:
        # One with a process left running in the background, one with the host end of its veth
        # read from inside (eth0@ifN: N is the host's interface index).
        background = {"command": ["sh", "-c", "(sleep 600 &) ; echo ok"]}
        assert api.post(f"/v1/sandboxes/{ids[0]}/exec", json=background).json()["stdout"] == "ok\n"
        link = api.post(
            f"/v1/sandboxes/{ids[1]}/exec", json={"command": ["cat", "/sys/class/net/eth0/iflink"]}
        )
        host_index = int(link.json()["stdout"])
    assert Path(f"/sys/class/net/{_interface(host_index)}").exists()
    inits = _inits(prefix)
    assert len(inits) == 3 and all(_alive(pid, started) for pid, started in inits.items())

    # Killed while a command runs in the third.
    busy = threading.Thread(target=_exec_until_cut, args=(server, ids[2]), daemon=True)
    busy.start()
    time.sleep(1.0)
    server.kill()
    busy.join(30)
    assert len(runtime_sandboxes(prefix)) == 3  # nothing removed them: the server had no chance

    server.start()
    assert runtime_sandboxes(prefix) == []
    assert not [pid for pid, started in inits.items() if _alive(pid, started)]
    assert not list((RUNTIME_ROOT / "sandboxes").glob(f"{prefix}*"))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/sandboxes/{prefix}" not in mounts
    assert not list(CGROUPS.glob(f"*/orch_{prefix}*"))
    assert not list(Path("/run/netns").glob(f"orch-{server.instance}-*"))
    assert _interface(host_index) == ""  # its veth went with its namespace
    network = cni.for_launcher(cni.load("orch-sandbox"))
    assert cni.reservations(network, f"orch-{server.instance}-") == {}
    with server.api() as api:
        for sandbox_id in ids:
            shown = api.get(f"/v1/sandboxes/{sandbox_id}").json()
            assert (shown["status"], shown["reason"]) == ("removed", "the server restarted"), shown
        assert api.get("/v1/sandboxes").json() == []
        # And the restarted server holds sandboxes again.
        fresh = api.post("/v1/sandboxes", json={}).json()
        assert (
            api.post(f"/v1/sandboxes/{fresh['id']}/exec", json={"command": ["true"]}).json()["exit_code"] == 0
        )
    log = server.log.read_text()
    assert log.count("removed 3 sandboxes on demand that this server held before it restarted") == 1


def _exec_until_cut(server: Server, sandbox_id: str) -> None:
    try:
        with server.api() as api:
            api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"command": ["sleep", "300"], "timeout": 300})
    except httpx.HTTPError:
        pass  # the server died under it


def _inits(prefix: str) -> dict[int, str]:
    """Host pids of the sandboxes' PID 1 (from the runtime's state), and when each started."""
    pids = {}
    for name in runtime_sandboxes(prefix):
        state = subprocess.run(
            ["runc", "--root", str(RUNTIME_ROOT / "runc"), "state", name],
            capture_output=True,
            text=True,
            check=True,
        )
        pid = int(json.loads(state.stdout)["pid"])
        pids[pid] = _stat(pid)[19]
    return pids


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name (state first); [] when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _alive(pid: int, started: str) -> bool:
    """Whether that process still runs: not gone, not a zombie, not another with its number."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z" and fields[19] == started


def _interface(index: int) -> str:
    """The host's interface with this index ("" when there is none)."""
    for path in Path("/sys/class/net").iterdir():
        try:
            if int((path / "ifindex").read_text()) == index:
                return path.name
        except (OSError, ValueError):
            continue
    return ""
