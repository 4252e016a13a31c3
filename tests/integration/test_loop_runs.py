"""Managed-loop runs on a real server: the model is the scripted server on 127.0.0.1 (through the
provider's SDK, called by the server), the tools run in the run's real runc sandbox as its user,
`orch run` shows the conversation, and a server killed during a loop leaves no run stuck and no
sandbox behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Server, sandboxes
from tests.integration.test_runs import write
from tests.model_server import KEY, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def loop_server(make_server, model_server: ModelServer) -> Server:  # type: ignore[no-untyped-def]
    server: Server = make_server()
    server.settings = {"ORCH_MODEL_ENDPOINTS": model_server.openai_url}
    server.start()
    res = server.cli("secret", "set", "MODEL_KEY", input=KEY)
    assert res.returncode == 0, res.stderr
    return server


def publish_loop(server: Server, tmp_path: Path, model_server: ModelServer) -> None:
    manifest = (
        f"loop:\n  model: m\n  provider: openai\n  base_url: {model_server.openai_url}\n"
        "  api_key_secret: MODEL_KEY\n"
    )
    agent = write(tmp_path / "looper", {"orch.yaml": manifest, "notes.md": "orch was here\n"})
    res = server.cli("publish", str(agent), "--name", "looper")
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_loop_runs_its_tools_in_the_runs_sandbox(
    make_server, model_server: ModelServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = loop_server(make_server, model_server)
    publish_loop(server, tmp_path, model_server)
    model_server.script(
        Reply(calls=[("bash", {"command": "id -u; cat notes.md; echo $MODEL_KEY"})]),
        Reply(calls=[("write_file", {"path": "answer.txt", "content": "42"})]),
        Reply(calls=[("read_file", {"path": "answer.txt"})]),
        Reply(text="The answer is 42."),
    )
    res = server.cli("run", "looper", "--input", '{"prompt": "look around"}')
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == "The answer is 42."
    assert "→ bash id -u; cat notes.md; echo $MODEL_KEY" in res.stderr  # the transcript, live
    # What the tools answered, as the model got it: the sandbox user, the bundle's file, no key.
    results = [m for m in model_server.bodies()[-1]["messages"] if m["role"] == "tool"]
    assert results[0]["content"] == "1000\norch was here\n\n", results[0]
    assert results[2]["content"] == "42"
    runs = json.loads(server.cli("runs", "list", "--json").stdout)
    assert runs[0]["usage"] == {"input_tokens": 40, "output_tokens": 20, "model_calls": 4}
    events = json.loads(server.cli("runs", "events", runs[0]["id"], "--json").stdout)
    assert [e["type"] for e in events][-2:] == ["model_call", "final"] and len(events) == 11
    assert sandboxes(runs[0]["id"]) == []


def test_a_server_killed_during_a_loop_leaves_no_run_stuck_and_no_sandbox(
    make_server, model_server: ModelServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = loop_server(make_server, model_server)
    publish_loop(server, tmp_path, model_server)
    model_server.script(Reply(calls=[("bash", {"command": "sleep 1"})]), Reply(text="late", delay=60))
    with server.api() as api:
        run_id = api.post("/v1/runs", json={"agent": "looper", "input": "wait"}).json()["id"]
        deadline = time.monotonic() + 60
        while len(model_server.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the loop waits on its second model call, its sandbox open
        assert len(model_server.requests) == 2 and sandboxes(run_id) != []
    server.kill()
    server.start()
    run = server.get(f"/v1/runs/{run_id}")
    assert run["status"] == "failed" and run["reason"] == "the server stopped while the run was running"
    assert sandboxes(run_id) == []


def test_a_cancel_while_a_tool_runs_cancels_the_run(
    make_server, model_server: ModelServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The tester's case: `orch runs cancel` while the model's `sleep 100` runs in the sandbox."""
    server = loop_server(make_server, model_server)
    publish_loop(server, tmp_path, model_server)
    model_server.script(Reply(calls=[("bash", {"command": "echo go; sleep 100"})]), Reply(text="done"))
    with server.api() as api:
        run_id = api.post("/v1/runs", json={"agent": "looper", "input": "wait"}).json()["id"]
        for _ in range(600):  # the tool runs
            if any(e["type"] == "tool_call" for e in api.get(f"/v1/runs/{run_id}/events").json()):
                break
            time.sleep(0.1)
        assert server.cli("runs", "cancel", run_id).returncode == 0
        for _ in range(600):
            if (run := api.get(f"/v1/runs/{run_id}").json())["status"] not in ("starting", "running"):
                break
            time.sleep(0.1)
        events = api.get(f"/v1/runs/{run_id}/events").json()
    assert (run["status"], run["reason"]) == ("cancelled", "cancelled while running"), run
    assert [e["type"] for e in events] == ["model_call", "tool_call", "tool_result"]
    assert events[2]["output"].startswith("go\n") and events[2]["output"].endswith("[stopped]")
    assert len(model_server.requests) == 1 and sandboxes(run_id) == []
