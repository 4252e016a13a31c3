"""What a loop run records, through the run worker (a fake held sandbox, the scripted model):
a cancel while a tool runs ends the run `cancelled`; the key and the workspace's secrets are
masked in its reason as in its events; an unusable character from the model is repaired, not a
crash; the answer and the `final` event are the same, cut the same way; a JSON string input
reaches the model as its text."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orch.sandbox.held_fake import Command
from orch.services.platform import Platform
from orch.services.run_output import MAX_OUTPUT
from orch.workers import runs
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_loop_runs import Holder, hold, loop_agent, shell
from tests.conftest import drain_runs
from tests.model_server import KEY, Fail, ModelServer, Reply, Trickle, model_server_fixture  # noqa: F401 - fixture

TOKEN = "ghp-workspace-secret-42"


@pytest.fixture(name="holder")
def holder_fixture(platform: Platform, model_server: ModelServer) -> Holder:
    return hold(platform, model_server)


def start(api: httpx.Client, run_input: str = "hi") -> str:
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    resp = api.post("/v1/runs", json={"agent": "looper", "input": run_input})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def ended(api: httpx.Client, platform: Platform, run_id: str) -> dict[str, Any]:
    drain_runs(platform)
    return dict(api.get(f"/v1/runs/{run_id}").json())


def behaving(holder: Holder, behaviour: Callable[[Command], int]) -> None:
    """The sandboxes `holder` opens from now on run their commands as `behaviour` says."""
    original = holder.open

    def opened(spec: Any) -> Any:
        sandbox = original(spec)
        sandbox.behaviour = behaviour
        return sandbox

    holder.open = opened  # type: ignore[method-assign]


def test_a_cancel_while_a_tool_runs_cancels_the_run(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    def slow(cmd: Command) -> int:
        if list(cmd.argv[:2]) == ["bash", "-lc"]:
            cmd.out(b"go\n")
            cmd.sleep(30)  # until the cancel stops it
            return 0
        return shell(cmd)

    loop_agent(api, tmp_path, model_server)
    model_server.script(Reply(calls=[("bash", {"command": "echo go; sleep 100"})]), Reply(text="done"))
    run_id = start(api)
    worker = threading.Thread(target=drain_runs, args=(platform,))
    behaving(holder, slow)
    worker.start()
    for _ in range(300):  # the tool runs
        if any(e["type"] == "tool_call" for e in api.get(f"/v1/runs/{run_id}/events").json()):
            break
        time.sleep(0.05)
    assert api.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    worker.join(60)
    assert not worker.is_alive()
    run = api.get(f"/v1/runs/{run_id}").json()
    assert (run["status"], run["reason"]) == ("cancelled", "cancelled while running"), run
    events = api.get(f"/v1/runs/{run_id}/events").json()
    assert [e["type"] for e in events] == ["model_call", "tool_call", "tool_result"]
    assert events[2]["output"] == "go\n\n[stopped]" and len(model_server.requests) == 1
    assert api.get(f"/v1/runs/{run_id}/logs").json()["stdout"] == ""


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_server_stop_while_a_tool_runs_fails_the_run_and_calls_no_model(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    provider: str,
) -> None:
    """A graceful stop ends the tools' sandbox under a running tool (137). The loop handed that
    result to the model, during the stop, and recorded its answer: `succeeded · exit 0`."""

    def killed_by_the_stop(cmd: Command) -> int:
        if list(cmd.argv[:2]) == ["bash", "-lc"]:
            cmd.out(b"started\n")
            for _ in range(600):
                if platform.stopping.is_set():
                    return 137  # the stop ended the sandbox under it
                time.sleep(0.05)
            return 0
        return shell(cmd)

    loop_agent(api, tmp_path, model_server, provider)
    model_server.script(Reply(calls=[("bash", {"command": "echo started; sleep 120"})]), Reply(text="done"))
    run_id = start(api)
    behaving(holder, killed_by_the_stop)
    worker = threading.Thread(target=drain_runs, args=(platform,))
    worker.start()
    try:
        for _ in range(300):  # the tool runs
            if any(e["type"] == "tool_call" for e in api.get(f"/v1/runs/{run_id}/events").json()):
                break
            time.sleep(0.05)
        platform.stopping.set()
        worker.join(60)
        assert not worker.is_alive()
    finally:
        platform.stopping.clear()
    run = api.get(f"/v1/runs/{run_id}").json()
    assert (run["status"], run["reason"], run["exit_code"]) == (
        "failed",
        "the server stopped while the run was running",
        None,
    ), run
    assert len(model_server.requests) == 1  # none after the stop began
    events = api.get(f"/v1/runs/{run_id}/events").json()
    assert [e["type"] for e in events] == ["model_call", "tool_call", "tool_result"]


@pytest.mark.parametrize(
    ("fail", "hidden"),
    [
        (Fail(401, f"Incorrect API key provided: Bearer {KEY}"), KEY),
        (Fail(400, f"Invalid 'messages[1].content': {TOKEN} is not allowed"), TOKEN),
    ],
)
def test_the_key_and_the_secrets_are_masked_in_the_reason(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    fail: Fail,
    hidden: str,
) -> None:
    assert api.put("/v1/secrets/TOKEN", json={"value": TOKEN}).status_code == 200
    manifest = (
        f"loop:\n  model: m\n  provider: openai\n  base_url: {model_server.openai_url}\n"
        "  api_key_secret: MODEL_KEY\nsecrets: [TOKEN]\n"
    )
    assert publish(api, "looper", bundle(tmp_path, {"orch.yaml": manifest})).status_code == 201
    model_server.script(fail)
    run_id = start(api)
    run = ended(api, platform, run_id)
    assert run["status"] == "failed" and run["reason"].startswith("the model endpoint refused"), run
    assert hidden not in str(run) and "***" in run["reason"]
    assert hidden not in str(api.get(f"/v1/runs/{run_id}/logs").json())


def test_a_lone_surrogate_from_the_model_is_repaired(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    loop_agent(api, tmp_path, model_server)
    model_server.script(
        Reply(text="a\ud800", calls=[("bash", {"command": "echo \ud800"}), ("x\udfff", {})]),
        Reply(text="the answer \ud800"),
    )
    run_id = start(api)
    run = ended(api, platform, run_id)
    assert (run["status"], run["reason"]) == ("succeeded", None), run
    assert api.get(f"/v1/runs/{run_id}/logs").json()["stdout"] == "the answer \ufffd"
    events = api.get(f"/v1/runs/{run_id}/events").json()
    assert events[1]["arguments"] == {"command": "echo \ufffd"} and events[3]["name"] == "x\ufffd"


def test_a_long_answer_is_the_same_in_final_and_stdout(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    loop_agent(api, tmp_path, model_server)
    model_server.script(Reply(text="é" * (MAX_OUTPUT // 2 + 1000)))  # 2 bytes each: over the bound
    run_id = start(api)
    run = ended(api, platform, run_id)
    logs = api.get(f"/v1/runs/{run_id}/logs").json()
    assert run["status"] == "succeeded" and logs["truncated"] is True, run
    stdout = logs["stdout"]
    (final,) = [e for e in api.get(f"/v1/runs/{run_id}/events").json() if e["type"] == "final"]
    assert final["text"] == stdout == "é" * (MAX_OUTPUT // 2) and final["truncated"] is True


def test_a_json_string_input_reaches_the_model_as_its_text(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    loop_agent(api, tmp_path, model_server)
    model_server.script(Reply(text="ok"))
    ended(api, platform, start(api, '"Summarise notes"'))
    assert model_server.requests[0].body["messages"][1] == {"role": "user", "content": "Summarise notes"}


def test_a_cancel_once_seen_stays_seen(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    """The run's cancel check is shared (a loop's tool, then the loop): the look that saw the
    cancel must not keep it from the next one, which the once-a-second throttle would answer."""
    loop_agent(api, tmp_path, model_server)
    run_id = start(api)
    check = runs._stop_check(platform, run_id)
    assert api.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    for _ in range(100):  # the store is asked a second after the check was made
        if check():
            break
        time.sleep(0.05)
    assert check() and check()


def test_a_timed_out_run_leaves_no_model_call_behind(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    """A model endpoint that trickles its answer: the run times out as before, and the call it
    stopped waiting for ends with it, its connection closed (it went on in a thread of the
    server, one per timed-out run, as long as the endpoint trickled; found by a tester)."""
    loop_agent(api, tmp_path, model_server)
    model_server.script(Trickle())
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi", "timeout": 1}).json()["id"]
    before = set(threading.enumerate())
    run = ended(api, platform, run_id)
    assert (run["status"], run["reason"]) == ("timed_out", "timed out after 1 s"), run
    left = [t for t in threading.enumerate() if t not in before and t.name == "orch-loop-call"]
    for thread in left:
        thread.join(10)
    assert not any(t.is_alive() for t in left)
    for _ in range(200):  # the endpoint sees the connection closed
        if model_server.hung_up:
            break
        time.sleep(0.05)
    assert (model_server.hung_up, model_server.trickling) == (1, 0)
