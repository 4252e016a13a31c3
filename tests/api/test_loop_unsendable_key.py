"""A loop run whose API key no HTTP header can carry fails through the worker before any
request, its reason naming the secret and quoting none of the key; the sandbox it held goes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orch.services.platform import Platform
from tests.api.test_cli_runs import worker  # noqa: F401 - fixture
from tests.api.test_loop_runs import Holder, holder, loop_agent  # noqa: F401 - fixture
from tests.conftest import drain_runs
from tests.model_server import ModelServer, model_server_fixture  # noqa: F401 - fixture


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_key_ending_in_a_line_break_fails_the_run_naming_its_secret(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,  # noqa: F811 - the fixture
    model_server: ModelServer,
    tmp_path: Path,
    provider: str,
) -> None:
    key = "sk-twonl-123\n"  # what `printf 'sk-twonl-123\n\n' | orch secret set` stores
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": key}).status_code == 200
    loop_agent(api, tmp_path, model_server, provider)
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).json()["id"]
    drain_runs(platform)
    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "failed", run
    assert run["reason"] == (
        "The API key in the workspace secret MODEL_KEY (loop.api_key_secret) cannot be sent in an "
        "HTTP header: it ends with a line break."
    )
    assert model_server.requests == []
    logs = api.get(f"/v1/runs/{run_id}/logs").json()
    assert "sk-twonl" not in str(logs) and "orch secret set MODEL_KEY" in logs["log"]
    assert all(sandbox.removed for sandbox in holder.fake.sandboxes.values())
