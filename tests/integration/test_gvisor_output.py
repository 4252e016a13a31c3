"""Under gVisor an agent's large writes reach its run whole, as under runc. runsc hands the
sandbox the launcher's pipes as host descriptors, which gVisor's kernel keeps non-blocking: one
write of more than 64 KiB returned a short count, and a Python agent (PYTHONUNBUFFERED=1 in the
base image) kept the first 65,536 bytes of a 200 KB print, the run `succeeded`, `truncated`
false (found by a tester); a held sandbox's command alike. The command now writes through the
relay (sandbox/relay.c)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# One print of 208,012 bytes, one write of 300,000 bytes to stderr; then ends as told.
AGENT = (
    "import json, os, sys\n"
    'print(json.dumps({"items": ["x" * 100] * 2000}))\n'
    "sys.stderr.buffer.write(b'E' * 300000)\n"
    "sys.stderr.flush()\n"
    "code = os.environ.get('END', '0')\n"
    "if code == 'kill':\n"
    "    sys.stdout.flush(); os.kill(os.getpid(), 9)\n"
    "sys.exit(int(code))\n"
)
PRINTED = len(json.dumps({"items": ["x" * 100] * 2000})) + 1


def _run(server: Server, name: str, *args: str) -> dict:  # type: ignore[type-arg]
    res = server.cli("run", name, "--json", *args)
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_a_large_write_is_kept_whole_under_gvisor(server: Server, tmp_path: Path) -> None:
    for name, manifest in [("big", ""), ("big-gvisor", "isolation: gvisor\n")]:
        agent = tmp_path / name
        agent.mkdir()
        (agent / "main.py").write_text(AGENT)
        (agent / "orch.yaml").write_text(f"name: {name}\n{manifest}")
        res = server.cli("publish", str(agent))
        assert res.returncode == 0, res.stdout + res.stderr
        for _ in range(2):  # a cold sandbox, then one started ahead of need (when warm ones are on)
            run = _run(server, name)
            assert run["status"] == "succeeded", run
            assert (len(run["stdout"]), run["stdout"][-3:]) == (PRINTED, "]}\n"), run["isolation"]
            assert run["stderr"] == "E" * 300000, (run["isolation"], len(run["stderr"]))
        assert run["isolation"] == ("gvisor" if manifest else "runc")
    # The agent's own end is the run's, through the relay too.
    failed = _run(server, "big-gvisor", "--env", "END=3")
    assert (failed["status"], failed["exit_code"], len(failed["stdout"])) == ("failed", 3, PRINTED), failed
    killed = _run(server, "big-gvisor", "--env", "END=kill")
    assert (killed["exit_code"], len(killed["stdout"])) == (137, PRINTED), killed


def test_a_large_write_of_a_held_sandboxs_command_is_kept_whole_under_gvisor(tmp_path: Path) -> None:
    server = Server(tmp_path / "home")
    server.settings = {"ORCH_ISOLATION": "gvisor"}
    server.start()
    try:
        res = server.cli("sandbox", "create", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        sb = json.loads(res.stdout)
        assert sb["isolation"] == "gvisor"
        command = ["python3", "-c", AGENT]
        with server.api() as api:
            resp = api.post(
                f"/v1/sandboxes/{sb['id']}/exec", json={"command": command, "env": {"END": "4"}}, timeout=300
            )
        assert resp.status_code == 200, resp.text
        done = resp.json()
        assert (done["exit_code"], len(done["stdout"]), done["stderr"]) == (4, PRINTED, "E" * 300000)
        missing = server.cli("sandbox", "exec", sb["id"], "--", "no-such-command")
        assert (missing.returncode, missing.stderr) == (127, "orch: no-such-command: command not found\n")
        assert server.cli("sandbox", "rm", sb["id"]).returncode == 0
    finally:
        server.stop()
        server.cleanup()
