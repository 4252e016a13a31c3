"""Runs of managed-loop agents through the run worker: the model (the scripted server, through the
provider's SDK) is called by the platform with the workspace secret as its key, each tool call
runs in the run's held sandbox (a fake holder here; tests/integration/test_loop_runs.py has the
real one), every step is an event and a log line, the answer is the run's stdout, and the run's
JSON carries its usage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import Result

from orch.client.client import Client
from orch.engine.base import ContainerSpec
from orch.sandbox.held_fake import Command, FakeHolder, FakeSandbox, play
from orch.sandbox.launcher import Isolation
from orch.services.platform import Platform
from orch.store.schema import RunEventRow, utcnow
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli_runs import cli, worker  # noqa: F401 - fixtures
from tests.api.test_loop_publish import allow
from tests.conftest import drain_runs
from tests.model_server import KEY, Fail, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture


def shell(cmd: Command) -> int:
    """The fake sandbox's answers to what a loop run sends it: the bundle's copy, `bash -lc`."""
    if list(cmd.argv[:2]) in (["/bin/sh", "-c"], ["sh", "-c"]):
        return 0  # cp -R /opt/orch/bundle/. /home/user/work/, or write_file's `cat > "$1"`
    if list(cmd.argv[:2]) == ["bash", "-lc"]:
        cmd.out(f"ran {cmd.argv[2]!r} in {cmd.workdir}\n".encode())
        return 0
    return play(cmd)


class Holder:
    """A FakeHolder whose sandboxes answer `shell`."""

    def __init__(self) -> None:
        self.fake = FakeHolder()

    def open(self, spec: ContainerSpec) -> FakeSandbox:
        sandbox = self.fake.open(spec)
        sandbox.behaviour = shell
        return sandbox


def hold(platform: Platform, model_server: ModelServer) -> Holder:
    """Loop runs' sandboxes from a fake Holder, the scripted model's endpoints allowed."""
    allow(platform, model_server.openai_url, model_server.anthropic_url)
    held = Holder()
    platform.held.holders[Isolation.RUNC] = held
    return held


@pytest.fixture
def holder(platform: Platform, model_server: ModelServer) -> Holder:
    return hold(platform, model_server)


def loop_agent(api: httpx.Client, tmp_path: Path, server: ModelServer, provider: str = "openai") -> None:
    url = server.openai_url if provider == "openai" else server.anthropic_url
    manifest = (
        f"loop:\n  model: m\n  provider: {provider}\n  base_url: {url}\n"
        "  api_key_secret: MODEL_KEY\n  system: Be brief.\n"
    )
    resp = publish(api, "looper", bundle(tmp_path, {"orch.yaml": manifest, "notes.md": "# notes\n"}))
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_loop_run_calls_the_model_runs_its_tools_and_answers(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    provider: str,
) -> None:
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server, provider)
    model_server.script(
        Reply(text="Let me look.", calls=[("bash", {"command": "ls"})], input_tokens=100, output_tokens=20),
        Reply(text="There is one file: notes.md.", input_tokens=150, output_tokens=10),
    )
    asked = {"agent": "looper", "input": '{"prompt": "What is here?"}'}
    run_id = api.post("/v1/runs", json=asked).json()["id"]
    drain_runs(platform)

    run = api.get(f"/v1/runs/{run_id}").json()
    assert (run["status"], run["reason"]) == ("succeeded", None), run
    assert run["usage"] == {"input_tokens": 250, "output_tokens": 30, "model_calls": 2}
    logs = api.get(f"/v1/runs/{run_id}/logs").json()
    assert logs["stdout"] == "There is one file: notes.md."
    assert "→ bash ls" in logs["log"] and "✓ ran 'ls' in /home/user/work" in logs["log"]
    events = api.get(f"/v1/runs/{run_id}/events").json()
    assert [e["type"] for e in events] == ["model_call", "tool_call", "tool_result", "model_call", "final"]
    assert events[2]["output"] == "ran 'ls' in /home/user/work\n"

    # The prompt went to the model as the first user message, with the key as its credential; the
    # key never entered the sandbox, which ran the bundle's copy and the tool, then went.
    first = model_server.requests[0]
    assert "What is here?" in str(first.body["messages"][0 if provider == "anthropic" else 1])
    assert KEY in str(first.headers)
    (sandbox,) = holder.fake.sandboxes.values()
    assert KEY not in str(sandbox.spec.env) and sandbox.removed
    assert [c[0] for c in sandbox.commands] == ["/bin/sh", "bash"]


def test_a_missing_key_secret_fails_the_run_before_any_sandbox(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    loop_agent(api, tmp_path, model_server)
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).json()["id"]
    drain_runs(platform)
    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "failed" and "MODEL_KEY" in run["reason"], run
    assert holder.fake.opened == [] and model_server.requests == []
    assert run["usage"] is None


def test_a_model_that_echoes_the_key_has_it_masked_everywhere(
    api: httpx.Client, platform: Platform, holder: Holder, model_server: ModelServer, tmp_path: Path
) -> None:
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server)
    model_server.script(Reply(text=f"your key is {KEY}"))
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).json()["id"]
    drain_runs(platform)
    logs = api.get(f"/v1/runs/{run_id}/logs").json()
    assert logs["stdout"] == "your key is ***"
    assert KEY not in str(api.get(f"/v1/runs/{run_id}/events").json())


def test_orch_runs_events_prints_the_transcript_and_the_json(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    cli: Callable[..., Result],  # noqa: F811 - the fixture
) -> None:
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server)
    calls = [("bash", {"command": "ls"}), ("write_file", {"path": "k.txt", "content": "hello world\n"})]
    model_server.script(Reply(text="Looking.", calls=calls), Reply(text="Done."))
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).json()["id"]
    drain_runs(platform)

    shown = cli("runs", "events", run_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("◆ model (10 in, 5 out,") and lines[0].endswith("s): Looking.")
    # Each tool call as a person reads it (not a dict's repr), then the answer, then the run's end.
    assert lines[1:6] == [
        "→ bash ls",
        "  ✓ ran 'ls' in /home/user/work",
        "→ write_file k.txt (12 bytes)",
        "  ✓ wrote 12 bytes to k.txt",
        lines[5],
    ]
    assert lines[6:-1] == ["Done."] and lines[-1].startswith("✓ succeeded in ")
    as_json = cli("runs", "events", run_id, "--json")
    assert [e["type"] for e in json.loads(as_json.stdout)] == [
        "model_call",
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "model_call",
        "final",
    ]
    followed = cli("runs", "events", run_id, "-f", "--json")  # an ended run: all, then the end
    assert [json.loads(line)["seq"] for line in followed.stdout.splitlines()] == [1, 2, 3, 4, 5, 6, 7]
    assert cli("runs", "events", "no-such-run").exit_code == 2
    # `orch runs show` says a loop run's usage.
    usage = [line for line in cli("runs", "show", run_id).stdout.splitlines() if "usage" in line]
    assert usage == ["  usage        2 model calls · 20 tokens in, 10 out"]


def test_orch_runs_events_pages_through_more_events_than_one_answer_holds(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    workspace: tuple[str, str],
    cli: Callable[..., Result],  # noqa: F811 - the fixture
) -> None:
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server)
    model_server.script(Reply(text="Done."))
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).json()["id"]
    drain_runs(platform)
    with platform.store.session() as s:  # 1041 more: past the API's page of 1000
        s.add_all(
            RunEventRow(
                run_id=run_id,
                seq=seq,
                type="tool_call",
                at=utcnow(),
                data=json.dumps({"name": "bash", "arguments": {"command": f"echo {seq}"}}),
            )
            for seq in range(3, 1044)
        )
    total = 1043

    shown = cli("runs", "events", run_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert len(lines) == total + 1 and lines[-2] == "→ bash echo 1043" and lines[-1].startswith("✓ succeeded")
    assert len(json.loads(cli("runs", "events", run_id, "--json").stdout)) == total
    assert len(cli("runs", "events", run_id, "-f", "--json").stdout.splitlines()) == total
    with Client("http://testserver", workspace[1], transport=api._transport) as client:
        run = client.runs.get(run_id)
        assert [e["seq"] for e in run.events()] == list(range(1, total + 1))
        assert [e["seq"] for e in run.events(after=1040)] == [1041, 1042, 1043]


def test_orch_runs_events_of_a_loop_run_that_failed_before_any_event_says_why(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    cli: Callable[..., Result],  # noqa: F811 - the fixture
) -> None:
    loop_agent(api, tmp_path, model_server)
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).json()["id"]
    drain_runs(platform)  # no MODEL_KEY: failed before any event
    shown = cli("runs", "events", run_id)
    assert shown.exit_code == 0, shown.output
    [line] = shown.stdout.splitlines()
    assert line.startswith("✗ failed") and "MODEL_KEY" in line
    assert json.loads(cli("runs", "events", run_id, "--json").stdout) == []


def test_a_loop_agent_is_shown_as_its_model(
    api: httpx.Client,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    cli: Callable[..., Result],  # noqa: F811 - the fixture
) -> None:
    root = tmp_path / "hello"
    root.mkdir()
    (root / "orch.yaml").write_text(
        f"loop:\n  model: m-1\n  provider: openai\n  base_url: {model_server.openai_url}\n"
    )
    published = cli("publish", str(root))
    assert published.exit_code == 0, published.output
    assert "✓ Published hello v1 · loop (m-1 via openai) · 1 file" in published.stdout
    listed = cli("agents", "list").stdout.splitlines()[1]
    assert listed.split()[:5] == ["hello", "v1", "loop", "(m-1", "via"]
    assert "  entrypoint   loop (m-1 via openai)" in cli("agents", "show", "hello").stdout.splitlines()


SAID = "\x1b[2Jclear \x1b[31mred [bold]b[/] \\"  # a screen clear, a colour, markup, a backslash
TOOL = "\x1b[1Aup"  # a tool's name: the cursor up over the CLI's lines
WROTE = b"\x1b]0;title\x07hi"  # a tool's output: the window's title, its BEL dropped by rich


def hostile(cmd: Command) -> int:
    """`shell`, with a tool's command writing WROTE."""
    if list(cmd.argv[:2]) == ["bash", "-lc"]:
        cmd.out(WROTE)
        return 0
    return shell(cmd)


class HostileHolder(Holder):
    def open(self, spec: ContainerSpec) -> FakeSandbox:
        sandbox = super().open(spec)
        sandbox.behaviour = hostile
        return sandbox


def test_a_transcript_shows_the_controls_the_model_and_tools_wrote_on_a_terminal(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    worker: None,  # noqa: F811 - the fixture
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent's output was made safe on a terminal, but not the loop's transcript: the
    model's text, a tool's name and its output reached the terminal raw (a screen clear; a
    title whose BEL rich dropped, so the terminal swallowed the CLI's lines after it). They are
    shown as the agent's output is, in `orch run`, `orch runs logs` and `orch runs events`,
    never read as rich's markup; piped, they are as they came (found by a tester)."""
    platform.held.holders[Isolation.RUNC] = HostileHolder()
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server)
    model_server.script(
        Reply(text=SAID, calls=[("bash", {"command": "x"}), (TOOL, {})]), Reply(text="The answer.")
    )
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stdout and stderr are terminals, as rich sees it
    ran = cli("run", "looper", "--input", '"hi"')
    assert ran.exit_code == 0, ran.output
    run_id = json.loads(cli("runs", "list", "--json").stdout)[0]["id"]
    logs, events = cli("runs", "logs", run_id), cli("runs", "events", run_id)
    for shown in (ran.stderr, logs.stderr, events.stdout):
        # Colours pass, reset at the line's end; markup is text.
        assert "): ^[[2Jclear \x1b[31mred [bold]b[/] \\\x1b[0m" in shown, repr(shown)
        assert "→ ^[[1Aup" in shown and "  ✓ ^[]0;title^Ghi" in shown, repr(shown)
        for control in ("\x1b[2J", "\x1b[1A", "\x1b]", "\x07"):
            assert control not in shown, repr(shown)
    assert "succeeded" in events.stdout.splitlines()[-1]

    monkeypatch.delenv("TTY_COMPATIBLE")
    piped = cli("runs", "events", run_id).stdout.splitlines()
    assert piped[0].endswith(f"): {SAID}"), repr(piped[0])
    assert piped[1:5] == ["→ bash x", f"  ✓ {WROTE.decode()}", f"→ {TOOL} ", piped[4]]
    assert f"): {SAID}\n" in cli("runs", "logs", run_id).stderr


def test_a_reason_quoting_the_endpoint_shows_its_controls_on_a_terminal(
    api: httpx.Client,
    platform: Platform,
    holder: Holder,
    model_server: ModelServer,
    tmp_path: Path,
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's end line quotes the endpoint's message, which the endpoint wrote."""
    assert api.put("/v1/secrets/MODEL_KEY", json={"value": KEY}).status_code == 200
    loop_agent(api, tmp_path, model_server)
    model_server.script(Fail(400, "bad \x1b]0;title\x07request"))
    run_id = api.post("/v1/runs", json={"agent": "looper", "input": "hi"}).json()["id"]
    drain_runs(platform)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    [end] = cli("runs", "events", run_id).stdout.splitlines()
    assert "(400): bad ^[]0;title^Grequest" in end and "\x1b]" not in end, repr(end)
    shown = cli("runs", "show", run_id).stdout  # runs show too
    assert "^[]0;title^Grequest" in shown and "\x1b]" not in shown, repr(shown)
    monkeypatch.delenv("TTY_COMPATIBLE")
    [end] = cli("runs", "events", run_id).stdout.splitlines()
    assert end.endswith("(400): bad \x1b]0;title\x07request"), repr(end)
