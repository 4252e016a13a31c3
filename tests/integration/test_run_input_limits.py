"""A run's input and variables up to what one environment string can hold reach the agent (in
ORCH_INPUT and on stdin) on the real launcher; one byte more is refused before the run, with
exit 2, rather than failing it with "Argument list too long"."""

from __future__ import annotations

import json
from pathlib import Path

from orch.services.runs import MAX_INPUT, MAX_VARIABLE
from tests.integration.conftest import Server

AGENT = (
    "import os, sys\n"
    "print(len(sys.stdin.read()), len(os.environ['ORCH_INPUT']), len(os.environ.get('BIG', '')))\n"
)


def test_the_largest_input_and_variable_reach_the_agent(server: Server, tmp_path: Path) -> None:
    largest = tmp_path / "largest.json"
    largest.write_text(json.dumps("a" * (MAX_INPUT - 2)))  # a JSON string: its quotes count
    big = "b" * (MAX_VARIABLE - len("BIG="))
    for name, manifest in [("sizes", ""), ("sizes-gvisor", "isolation: gvisor\n")]:
        agent = tmp_path / name
        agent.mkdir()
        (agent / "main.py").write_text(AGENT)
        (agent / "orch.yaml").write_text(manifest)
        assert server.cli("publish", str(agent)).returncode == 0
        res = server.cli("run", name, "--input", f"@{largest}", "--env", f"BIG={big}", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["stdout"].split() == [str(MAX_INPUT)] * 2 + [str(len(big))]
    largest.write_text(json.dumps("a" * (MAX_INPUT - 1)))
    res = server.cli("run", "sizes", "--input", f"@{largest}")
    assert res.returncode == 2 and "the limit is 131,060 (128 KiB" in res.stderr, res.stderr
    # (No command line can carry this one to the CLI: it is over the same limit.)
    with server.api() as api:
        resp = api.post("/v1/runs", json={"agent": "sizes", "env": {"BIG": big + "b"}})
    assert resp.status_code == 400 and "more than one variable can hold" in resp.json()["message"]
    assert len(server.get("/v1/runs")) == 2  # the refused ones made no run
