"""A run whose environment is not ready: cancelled while it waits for the build, it ends
cancelled, not failed (the build goes on); in one whose build failed, it fails saying how to fix
the environment."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.errors import BuildFailed
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
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


def test_a_rebuild_under_way_or_failed_leaves_the_environment_its_image(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As `docker build` leaves the old tag: runs, sandboxes and the workspace default keep the
    image of the last build that succeeded. Found by a tester: a failed rebuild (a timeout, the
    disk reserve, a registry down) failed every run at once, in every workspace for a shared
    environment, though its image was there, until someone built it again."""
    assert api.post("/v1/environments", json={"name": "flaky", "dockerfile": GOOD}).status_code == 201
    drain(platform)
    image = api.get("/v1/environments/flaky").json()["image"]
    files = {"main.py": "print('hi')\n", "orch.yaml": "environment: flaky\n"}
    assert publish(api, "pinned", bundle(tmp_path, files)).status_code == 201

    def timed_out(*_args: object, **_kw: object) -> None:
        raise BuildFailed("The build was stopped after 5 s.", "Raise ORCH_BUILD_TIMEOUT.")

    monkeypatch.setattr(fake_engine, "build", timed_out)
    rebuild = api.post("/v1/environments/flaky/build", json={"no_cache": True}).json()["build_id"]
    # Queued (no build worker here): a run does not wait for it.
    run_id = api.post("/v1/runs", json={"agent": "pinned"}).json()["id"]
    assert run_worker.claim(platform) == run_id
    run_worker.execute(platform, run_id)
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
    log = api.get(f"/v1/runs/{run_id}/logs").json()["log"]
    assert f"→ flaky is being built again ({rebuild}); this run uses its current image" in log

    drain(platform)
    env = api.get("/v1/environments/flaky").json()
    assert (env["status"], env["image"], env["build_id"]) == ("failed", image, rebuild)  # the latest build's
    assert env["error"] == "The build was stopped after 5 s. Raise ORCH_BUILD_TIMEOUT."
    run_id = api.post("/v1/runs", json={"agent": "pinned"}).json()["id"]
    drain_runs(platform)
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
    log = api.get(f"/v1/runs/{run_id}/logs").json()["log"]
    assert f"→ the latest build of flaky failed ({rebuild}); this run uses the image of the one before" in log
    assert api.put("/v1/workspace/default-environment", json={"environment": "flaky"}).status_code == 200
    platform.held.holders[Isolation.RUNC] = FakeHolder()
    sandbox = api.post("/v1/sandboxes", json={"environment": "flaky"})
    assert sandbox.status_code == 201, sandbox.text
    assert api.delete(f"/v1/sandboxes/{sandbox.json()['id']}").status_code == 204


def test_a_failed_build_says_its_error_with_one_full_stop(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def timed_out(*_args: object, **_kw: object) -> None:
        raise BuildFailed("The build was stopped after 5 s.", "Raise ORCH_BUILD_TIMEOUT.")

    monkeypatch.setattr(fake_engine, "build", timed_out)
    assert api.post("/v1/environments", json={"name": "slow", "dockerfile": GOOD}).status_code == 201
    drain(platform)
    files = {"main.py": "print('hi')\n", "orch.yaml": "environment: slow\n"}
    assert publish(api, "pinned", bundle(tmp_path, files)).status_code == 201
    run_id = api.post("/v1/runs", json={"agent": "pinned"}).json()["id"]
    drain_runs(platform)
    reason = api.get(f"/v1/runs/{run_id}").json()["reason"]
    assert (
        reason
        == "The environment slow failed to build: The build was stopped after 5 s. Raise ORCH_BUILD_TIMEOUT."
    )
