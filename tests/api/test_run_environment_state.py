"""A run whose environment is not ready: cancelled while it waits for the build, it ends
cancelled, not failed (the build goes on); in one whose build failed, it fails saying how to fix
the environment."""

from __future__ import annotations

from pathlib import Path

import httpx

from orch.services.platform import Platform
from orch.workers import runs as run_worker
from tests.api.test_agents_runs import bundle, publish
from tests.conftest import drain, drain_runs

GOOD = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"


def test_a_cancel_while_the_environment_builds_cancels_the_run(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    assert api.post("/v1/environments", json={"name": "slow", "dockerfile": GOOD}).status_code == 201
    files = {"main.py": "print('hi')\n", "orch.yaml": "environment: slow\n"}
    assert publish(api, "pinned", bundle(tmp_path, files)).status_code == 201
    created = api.post("/v1/runs", json={"agent": "pinned"}).json()
    run_id = run_worker.claim(platform)  # no build worker: the environment stays queued
    assert run_id == created["id"]
    assert api.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    run_worker.execute(platform, run_id)
    r = api.get(f"/v1/runs/{run_id}").json()
    assert (r["status"], r["reason"]) == ("cancelled", "cancelled before the agent started")
    log = api.get(f"/v1/runs/{run_id}/logs").json()["log"]
    assert "Cancelled while the environment slow was building (its build goes on)" in log
    assert api.get("/v1/environments/slow").json()["status"] == "queued"


def test_a_run_in_an_environment_that_failed_to_build_says_how_to_fix_it(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    broken = "FROM e2bdev/code-interpreter:latest\nRUN exit 1\n"
    assert api.post("/v1/environments", json={"name": "broken", "dockerfile": broken}).status_code == 201
    drain(platform)
    files = {"main.py": "print('hi')\n", "orch.yaml": "environment: broken\n"}
    assert publish(api, "pinned", bundle(tmp_path, files)).status_code == 201
    run_id = api.post("/v1/runs", json={"agent": "pinned"}).json()["id"]
    drain_runs(platform)
    r = api.get(f"/v1/runs/{run_id}").json()
    assert r["status"] == "failed" and r["reason"].startswith("The environment broken failed to build")
    # An environment keeps its Dockerfile: "fix it and run again" could not work.
    log = api.get(f"/v1/runs/{run_id}/logs").json()["log"]
    assert "`orch env logs broken`, then delete it and create it again" in log
