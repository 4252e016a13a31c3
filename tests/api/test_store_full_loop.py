"""A managed-loop run shares a code run's end (workers/runs.py `_finish`): one whose end the store
refused past store/refusals.py's PAUSES is held, and recorded with its answer at the run queue's next pass
once the store has room (tests/api/test_store_full.py has the code runs')."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orch.services.platform import Platform
from orch.workers import runs as run_worker
from tests.api.test_loop_runs import Holder, holder, loop_agent  # noqa: F401 - fixture
from tests.api.test_store_full import ends_a_run, refuse
from tests.model_server import KEY, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture
from tests.refusing_store import no_pauses


def test_a_loop_run_whose_end_the_store_refused_longer_ends_with_its_answer_once_it_has_room(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,  # noqa: F811 - fixture
    model_server: ModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_pauses(monkeypatch)
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server)
    model_server.script(Reply(text="Done.", input_tokens=10, output_tokens=2))
    refused = refuse(platform, 4, ends_a_run)  # the first try and the three again
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "go"}).json()["id"]
    assert run_worker.claim(platform) == run_id
    run_worker.execute(platform, run_id)
    assert len(refused) == 4
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "running"
    assert run_worker.claim(platform) is None  # the queue's next pass: the store has room again
    run = api.get(f"/v1/runs/{run_id}").json()
    assert (run["status"], run["exit_code"], run["reason"]) == ("succeeded", 0, None), run
    assert api.get(f"/v1/runs/{run_id}/logs").json()["stdout"] == "Done."
