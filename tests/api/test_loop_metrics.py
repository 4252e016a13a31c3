"""Managed-loop runs in the metrics (docs/metrics.md): one observation per run in every phase,
as a loop has them, and their sandboxes counted as started. They were observed in `api` and
`queue` only, and no start was counted (found by a tester: after 35 runs, 34 of them loop
runs, each later phase had 1 observation)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orch import metrics
from orch.services.platform import Platform
from tests.api.test_loop_runs import Holder, hold, loop_agent
from tests.api.test_metrics import scrape, value
from tests.conftest import drain_runs
from tests.model_server import KEY, Fail, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture


@pytest.fixture(name="holder")
def holder_fixture(platform: Platform, model_server: ModelServer) -> Holder:
    return hold(platform, model_server)


def test_loop_runs_are_observed_in_every_phase_and_their_sandboxes_counted(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server)
    model_server.script(
        Reply(calls=[("bash", {"command": "ls"})]),
        Reply(text="done"),
        Fail(400, "The model `m` does not exist."),  # the second run: a failed one counts too
    )
    for _ in range(2):
        assert api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).status_code == 201
        drain_runs(platform)
    samples = scrape(api)
    assert value(samples, "orch_runs_finished_total", status="succeeded") == 1
    assert value(samples, "orch_runs_finished_total", status="failed") == 1
    for phase in metrics.PHASES:
        assert value(samples, "orch_run_phase_seconds_count", phase=phase) == 2, phase
    assert value(samples, "orch_run_sandbox_starts_total", start="cold") == 2
    assert value(samples, "orch_run_sandbox_starts_total", start="warm") == 0
    assert value(samples, "orch_sandboxes_open") == 0
    assert all(s.removed for s in holder.fake.sandboxes.values())
