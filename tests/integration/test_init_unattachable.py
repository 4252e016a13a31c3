"""An agent cannot ptrace-attach its sandbox's init (runc): PID 1 is non-dumpable, so an attach
is refused (EPERM) and the run ends when the agent does. Before, the attach succeeded, the init
stayed in tracing stop after the agent exited 0, and the run held its slot until its timeout,
recorded `timed_out` (found by a tester). The agent's own processes stay traceable."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import Server

AGENT = """\
import ctypes, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
ATTACH, DETACH = 16, 17
print("init", libc.ptrace(ATTACH, 1, None, None), ctypes.get_errno(), flush=True)
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
attached = libc.ptrace(ATTACH, child, None, None)
os.waitpid(child, os.WUNTRACED)
print("child", attached, libc.ptrace(DETACH, child, None, None), flush=True)
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
"""


def test_the_init_cannot_be_attached_and_the_run_ends_with_the_agent(server: Server, tmp_path: Path) -> None:
    for isolation in ("runc", "gvisor"):  # gVisor's kernel refused it already: kept so
        agent = tmp_path / f"ptr-{isolation}"
        agent.mkdir()
        (agent / "main.py").write_text(AGENT)
        (agent / "orch.yaml").write_text(
            f"name: ptr-{isolation}\nisolation: {isolation}\nresources: {{timeout: 60}}\n"
        )
        assert server.cli("publish", str(agent)).returncode == 0
        for _ in range(2):  # cold, then warm (when warm sandboxes are on)
            run = json.loads(server.cli("run", f"ptr-{isolation}", "--json").stdout)
            assert (run["status"], run["isolation"]) == ("succeeded", isolation), run
            assert run["stdout"] == "init -1 1\nchild 0 0\n", run  # EPERM for PID 1; its own child traced
