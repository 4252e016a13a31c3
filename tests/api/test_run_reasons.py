"""A code agent's run's reason (workers/runs.py) on the fake engine: masked as its output is, and,
when the server's stop killed its sandbox, the stop's reason rather than the exit it caused."""

from __future__ import annotations

from pathlib import Path

import httpx

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.errors import EngineError
from orch.services.platform import Platform
from tests.api.test_agents_runs import bundle, publish, run

TOKEN = "ghp-workspace-secret-42"


def test_a_reason_holds_no_secret(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    assert api.put("/v1/secrets/TOKEN", json={"value": TOKEN}).status_code == 200
    files = {"main.py": "print('hi')\n", "orch.yaml": "secrets: [TOKEN]\n"}
    assert publish(api, "leaky", bundle(tmp_path, files)).status_code == 201

    def engine_echoes_the_environment(spec: ContainerSpec, out: object, err: object) -> ContainerExit:
        raise EngineError(f"runc: invalid environment TOKEN={spec.env['TOKEN']}", "Check the engine.")

    fake_engine.behaviour = engine_echoes_the_environment
    r = run(api, platform, "leaky")
    assert r["status"] == "failed" and r["reason"] == "runc: invalid environment TOKEN=***", r
    assert TOKEN not in str(api.get(f"/v1/runs/{r['id']}/logs").json())


def test_a_run_the_servers_stop_killed_says_so(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    assert publish(api, "printer", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201

    def stopped(spec: ContainerSpec, out: object, err: object) -> ContainerExit:
        platform.stopping.set()  # SIGTERM: the workers stop, and the launchers kill the sandboxes
        return ContainerExit(125)

    fake_engine.behaviour = stopped
    r = run(api, platform, "printer")
    assert (r["status"], r["exit_code"], r["reason"]) == (
        "failed",
        None,
        "the server stopped while the run was running",
    ), r
