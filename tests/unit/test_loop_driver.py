"""The managed loop's driver against the scripted model server (tests/model_server.py), through
both providers' SDKs, with its tools in a fake sandbox: a directory of this test's own where the
commands run as plain processes (the real sandbox: tests/integration/test_loop_held.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orch.bundle.loop_manifest import LoopConfig
from orch.loop import answer_size, conversation
from orch.loop.clip import Clip
from orch.loop.driver import MAX_CALLS, NO_INPUT, first_message, run_loop
from orch.loop.model import MAX_TOKENS, tokens
from orch.loop.outcome import Outcome
from orch.loop.providers import connect
from orch.loop.retry import Backoff
from orch.loop.sandbox import Finished, SandboxGone, ToolSandbox
from orch.models import RunStatus
from orch.secret.mask import Mask
from tests.model_server import KEY, Fail, ModelServer, Reply, Trickle, model_server_fixture  # noqa: F401 - fixture

PROVIDERS = ["openai", "anthropic"]
QUICK = Backoff(attempts=3, first=0.01, cap=0.05)


class LocalSandbox:
    """A fake ToolSandbox: commands run as processes in a directory, output kept as the real one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: list[list[str]] = []

    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        self.commands.append(list(argv))
        try:
            done = subprocess.run(
                list(argv),
                cwd=self.root,
                input=stdin or b"",
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output(exc.stdout or b"")
            return Finished(124, output, timed_out=True)
        output(done.stdout + done.stderr)
        return Finished(done.returncode, output)


class GoneSandbox:
    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        raise SandboxGone("The sandbox orch-x is no longer running.")


def config(server: ModelServer, provider: str, **settings: Any) -> LoopConfig:
    url = server.openai_url if provider == "openai" else server.anthropic_url
    return LoopConfig(
        model="test-model",
        provider=provider,  # type: ignore[arg-type]
        base_url=url,
        api_key_secret="MODEL_KEY",
        system="You are a test.",
        **settings,
    )


class Drive:
    def __init__(self, server: ModelServer, provider: str, sandbox: Any) -> None:
        self.server, self.provider, self.sandbox = server, provider, sandbox
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, run_input: str = "do it", key: str = KEY, **settings: Any) -> Outcome:
        kwargs = {k: settings.pop(k) for k in ("timeout", "should_stop", "mask") if k in settings}
        loop = config(self.server, self.provider, **settings)
        return run_loop(
            loop,
            connect(loop, key),
            self.sandbox,
            run_input,
            lambda kind, data: self.events.append((kind, data)),
            backoff=QUICK,
            **kwargs,
        )

    def types(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


@pytest.fixture(params=PROVIDERS)
def drive(request: pytest.FixtureRequest, model_server: ModelServer, tmp_path: Path) -> Drive:
    return Drive(model_server, request.param, LocalSandbox(tmp_path))


def results_sent(server: ModelServer, provider: str, request: int = -1) -> list[tuple[str, str]]:
    """(call id, output) of the tool results the `request`-th request carried."""
    body = server.requests[request].body
    if provider == "openai":
        return [(m["tool_call_id"], m["content"]) for m in body["messages"] if m["role"] == "tool"][-10:]
    last = body["messages"][-1]
    return [(b["tool_use_id"], b["content"]) for b in last["content"] if b["type"] == "tool_result"]


def test_a_tool_call_then_the_answer(drive: Drive) -> None:
    drive.server.script(
        Reply(text="Writing it.", calls=[("bash", {"command": "echo hi > out.txt && cat out.txt"})]),
        Reply(text="It says hi.", input_tokens=30, output_tokens=4),
    )
    outcome = drive()
    assert (outcome.status, outcome.answer, outcome.reason) == (RunStatus.SUCCEEDED, "It says hi.", None)
    assert outcome.usage.as_dict() == {"input_tokens": 40, "output_tokens": 9, "model_calls": 2}
    assert drive.types() == ["model_call", "tool_call", "tool_result", "model_call", "final"]
    first_call, second_call = drive.of("model_call")
    assert first_call["text"] == "Writing it." and first_call["turn"] == 1 and first_call["attempts"] == 1
    assert (first_call["input_tokens"], first_call["output_tokens"]) == (10, 5) and first_call[
        "duration"
    ] >= 0
    assert "text" not in second_call  # the answer is the final event's
    (call,) = drive.of("tool_call")
    assert call["name"] == "bash" and call["arguments"] == {"command": "echo hi > out.txt && cat out.txt"}
    (result,) = drive.of("tool_result")
    assert (result["name"], result["exit_code"], result["output"]) == ("bash", 0, "hi\n")
    assert result["call_id"] == call["call_id"]
    assert drive.of("final") == [{"text": "It says hi."}]
    assert (drive.sandbox.root / "out.txt").read_text() == "hi\n"
    assert drive.sandbox.commands == [["bash", "-lc", "echo hi > out.txt && cat out.txt"]]
    # What the model was sent: the system prompt, the input, the tools; then the result.
    first = drive.server.requests[0].body
    if drive.provider == "openai":
        assert first["messages"][:2] == [
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "do it"},
        ]
        assert [t["function"]["name"] for t in first["tools"]] == [
            "bash",
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
        ]
    else:
        assert first["system"] == "You are a test." and first["messages"] == [
            {"role": "user", "content": "do it"}
        ]
        assert [t["name"] for t in first["tools"]] == [
            "bash",
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
        ]
        assert first["max_tokens"] == 8192
    assert results_sent(drive.server, drive.provider) == [(call["call_id"], "hi\n")]


def test_several_tools_in_one_turn_run_in_order(drive: Drive) -> None:
    drive.server.script(
        Reply(
            calls=[
                ("write_file", {"path": "notes/a.txt", "content": "one\ntwo\n"}),
                ("edit_file", {"path": "notes/a.txt", "old": "two", "new": "2"}),
                ("read_file", {"path": "notes/a.txt"}),
                ("list_files", {"path": "notes"}),
            ]
        ),
        Reply(text="done"),
    )
    outcome = drive()
    assert outcome.status == RunStatus.SUCCEEDED
    assert drive.types() == ["model_call"] + ["tool_call", "tool_result"] * 4 + ["model_call", "final"]
    results = drive.of("tool_result")
    assert [r["name"] for r in results] == ["write_file", "edit_file", "read_file", "list_files"]
    assert [r["exit_code"] for r in results] == [0, 0, 0, 0]
    assert results[0]["output"] == "wrote 8 bytes to notes/a.txt"
    assert results[1]["output"] == "replaced 1 occurrence in notes/a.txt"
    assert results[2]["output"] == "one\n2\n"
    assert "a.txt" in results[3]["output"]
    sent = results_sent(drive.server, drive.provider)
    assert [i for i, _ in sent] == [c["call_id"] for c in drive.of("tool_call")]
    assert (drive.sandbox.root / "notes" / "a.txt").read_text() == "one\n2\n"


def test_a_failing_tool_is_a_result_the_model_sees(drive: Drive) -> None:
    (drive.sandbox.root / "twice.txt").write_text("x x\n")
    drive.server.script(
        Reply(
            calls=[
                ("bash", {"command": "echo oops >&2; exit 3"}),
                ("read_file", {"path": "missing.txt"}),
                ("edit_file", {"path": "twice.txt", "old": "x", "new": "y"}),
                ("browse", {"url": "https://example.org"}),
                ("bash", {"cmd": "ls"}),
            ]
        ),
        Reply(text="I could not."),
    )
    outcome = drive()
    assert outcome.status == RunStatus.SUCCEEDED and outcome.answer == "I could not."
    results = drive.of("tool_result")
    assert [r["exit_code"] for r in results] == [3, 1, 1, 2, 2]
    assert results[0]["output"] == "oops\n"
    assert "No such file" in results[1]["output"]
    assert "contains `old` 2 times" in results[2]["output"]
    assert "there is no tool 'browse'" in results[3]["output"] and "list_files" in results[3]["output"]
    assert "bash needs `command`" in results[4]["output"]
    sent = dict(results_sent(drive.server, drive.provider))
    assert sent[drive.of("tool_call")[0]["call_id"]] == "oops\n\n[exit code 3]"
    if drive.provider == "anthropic":
        blocks = drive.server.requests[-1].body["messages"][-1]["content"]
        assert [b["is_error"] for b in blocks] == [True] * 5
    assert (drive.sandbox.root / "twice.txt").read_text() == "x x\n"


def test_the_turn_limit(drive: Drive) -> None:
    drive.server.forever(Reply(calls=[("bash", {"command": "true"})]))
    outcome = drive(max_turns=3)
    assert outcome.status == RunStatus.FAILED
    assert outcome.reason == "max_turns (3) reached: the model still asked for tools"
    assert outcome.usage.model_calls == 3 and len(drive.server.requests) == 3
    assert len(drive.of("tool_result")) == 2  # the last turn's tools do not run


def test_the_token_limit(drive: Drive) -> None:
    drive.server.forever(Reply(calls=[("bash", {"command": "true"})], input_tokens=700, output_tokens=200))
    outcome = drive(max_tokens=1500)
    assert outcome.status == RunStatus.FAILED
    assert outcome.reason == "max_tokens (1500) reached: 1800 tokens in 2 model calls"
    assert outcome.usage.as_dict() == {"input_tokens": 1400, "output_tokens": 400, "model_calls": 2}
    if drive.provider == "anthropic":  # each call may answer at most what is left
        assert [b["max_tokens"] for b in drive.server.bodies()] == [1500, 600]


def test_the_token_limit_reached_by_one_call_says_one_call(drive: Drive) -> None:
    drive.server.forever(Reply(calls=[("bash", {"command": "true"})], input_tokens=900, output_tokens=200))
    outcome = drive(max_tokens=1000)
    assert outcome.reason == "max_tokens (1000) reached: 1100 tokens in 1 model call"


def test_429_then_success(drive: Drive) -> None:
    drive.server.script(Fail(429, "Rate limit reached", {"retry-after-ms": "20"}), Reply(text="fine"))
    outcome = drive()
    assert (outcome.status, outcome.answer) == (RunStatus.SUCCEEDED, "fine")
    assert len(drive.server.requests) == 2 and drive.of("model_call")[0]["attempts"] == 2
    assert outcome.usage.model_calls == 1


def test_500_forever_fails_with_the_endpoints_message(drive: Drive) -> None:
    drive.server.forever(Fail(500, "The server had an error while processing your request."))
    began = time.monotonic()
    outcome = drive()
    assert outcome.status == RunStatus.FAILED
    assert outcome.reason == (
        "the model endpoint answered 500 3 times: The server had an error while processing your request."
    )
    assert len(drive.server.requests) == 3 and time.monotonic() - began < 5
    assert drive.events == []


def test_a_refused_key_fails_at_once_naming_the_secret(drive: Drive) -> None:
    outcome = drive(key="sk-wrong")
    assert outcome.status == RunStatus.FAILED and len(drive.server.requests) == 1
    assert outcome.reason is not None
    assert outcome.reason.startswith("the model endpoint refused the API key (401: ")
    assert (
        "MODEL_KEY (loop.api_key_secret)" in outcome.reason and "orch secret set MODEL_KEY" in outcome.reason
    )


def test_another_client_error_fails_at_once(drive: Drive) -> None:
    drive.server.script(Fail(404, "The model `test-model` does not exist."))
    outcome = drive()
    assert (
        outcome.reason
        == "the model endpoint refused the request (404): The model `test-model` does not exist."
    )
    assert len(drive.server.requests) == 1


def test_an_unreachable_endpoint_names_its_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    loop = LoopConfig(model="m", provider="openai", base_url=f"http://127.0.0.1:{port}/v1")
    outcome = run_loop(
        loop, connect(loop, None), LocalSandbox(tmp_path), "hi", lambda *_: None, backoff=QUICK
    )
    assert outcome.status == RunStatus.FAILED and outcome.reason is not None
    assert outcome.reason.startswith(f"could not reach the model endpoint http://127.0.0.1:{port}/v1 (")
    assert "3 tries); check loop.base_url" in outcome.reason


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ('{"prompt": "Summarise the notes", "lang": "en"}', "Summarise the notes"),
        ('{"prompt": {"task": "x"}}', '{"task": "x"}'),
        ('{"url": "https://example.org"}', '{"url": "https://example.org"}'),
        ("[1, 2]", "[1, 2]"),
        ("plain words", "plain words"),
        ('"Summarise the notes"', "Summarise the notes"),  # a JSON string: its text, no quotes
        ('"  "', NO_INPUT),
        ("", NO_INPUT),
    ],
)
def test_the_first_message_is_the_inputs_prompt(given: str, sent: str) -> None:
    assert first_message(given) == sent


def test_json_input_with_a_prompt_is_sent_as_the_prompt(drive: Drive) -> None:
    drive.server.script(Reply(text="ok"))
    drive('{"prompt": "What is 2+2?", "other": 1}')
    messages = drive.server.requests[0].body["messages"]
    assert {"role": "user", "content": "What is 2+2?"} in messages


def test_the_run_timeout_ends_a_slow_model_call(drive: Drive) -> None:
    drive.server.script(Reply(text="late", delay=3))
    began = time.monotonic()
    outcome = drive(timeout=0.5)
    assert (outcome.status, outcome.reason) == (RunStatus.TIMED_OUT, "timed out after 0.5 s")
    assert time.monotonic() - began < 2


def test_a_cancel_stops_the_loop(drive: Drive) -> None:
    drive.server.forever(Reply(calls=[("bash", {"command": "true"})]))
    outcome = drive(should_stop=lambda: len(drive.events) >= 3)
    assert (outcome.status, outcome.reason) == (RunStatus.CANCELLED, "cancelled while running")
    assert drive.types() == ["model_call", "tool_call", "tool_result"]


def test_a_slow_tool_times_out_and_the_loop_goes_on(drive: Drive) -> None:
    drive.server.script(Reply(calls=[("bash", {"command": "echo start; sleep 5"})]), Reply(text="it hung"))
    began = time.monotonic()
    outcome = drive(tool_timeout=1)
    assert outcome.status == RunStatus.SUCCEEDED and time.monotonic() - began < 4
    (result,) = drive.of("tool_result")
    assert result["exit_code"] == 124 and result["output"].endswith("[timed out after 1 s]")


def test_long_output_keeps_its_head_and_tail(drive: Drive) -> None:
    script = "print('HEAD'); print('x' * 5000); print('TAIL')"
    drive.server.script(Reply(calls=[("bash", {"command": f'python3 -c "{script}"'})]), Reply(text="ok"))
    drive(tool_output_limit=1024)
    (result,) = drive.of("tool_result")
    output = result["output"]
    assert output.startswith("HEAD\n") and output.endswith("TAIL\n")
    assert "\n[... 3987 bytes cut ...]\n" in output and len(output) < 1100  # 5011 bytes, 1024 kept
    assert dict(results_sent(drive.server, drive.provider))[result["call_id"]] == output


def test_invalid_arguments_are_the_models_to_fix(model_server: ModelServer, tmp_path: Path) -> None:
    drive = Drive(model_server, "openai", LocalSandbox(tmp_path))
    model_server.script(Reply(calls=[("bash", "{not json")]), Reply(text="sorry"))
    outcome = drive()
    assert outcome.status == RunStatus.SUCCEEDED
    assert drive.of("tool_call")[0]["arguments"] == "{not json"
    assert drive.of("tool_result")[0]["output"] == "error: the arguments of bash are not valid JSON."


def test_secrets_are_masked_in_events_and_answer(drive: Drive) -> None:
    (drive.sandbox.root / "key").write_text("s3cret-value")
    drive.server.script(Reply(calls=[("read_file", {"path": "key"})]), Reply(text="the key is s3cret-value"))
    outcome = drive(mask=Mask(["s3cret-value"]))
    assert outcome.answer == "the key is ***"
    assert "s3cret-value" not in json.dumps(drive.events)


def test_a_sandbox_that_is_gone_fails_the_run(model_server: ModelServer) -> None:
    drive = Drive(model_server, "openai", GoneSandbox())
    model_server.script(Reply(calls=[("bash", {"command": "ls"})]))
    outcome = drive()
    assert outcome.status == RunStatus.FAILED
    assert outcome.reason == "the tools' sandbox stopped: The sandbox orch-x is no longer running."


def test_only_the_tools_the_loop_names_are_offered(drive: Drive) -> None:
    drive.server.script(Reply(calls=[("bash", {"command": "touch x"})]), Reply(text="ok"))
    drive(tools=["read_file"])
    first = drive.server.requests[0].body["tools"]
    assert len(first) == 1
    assert drive.of("tool_result")[0]["exit_code"] == 2 and not (drive.sandbox.root / "x").exists()


def test_backoff_grows_and_honours_retry_after_within_the_cap() -> None:
    backoff = Backoff(attempts=5, first=1.0, cap=30.0)
    assert [backoff.pause(n, None) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff.pause(1, 10.0) == 10.0 and backoff.pause(1, 3600.0) == 30.0


class CancelledSandbox:
    """A sandbox whose command the run's cancel stopped (HeldTools says so: `cancelled`), after
    the check that saw the cancel was asked by the command, not by the loop."""

    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        output(b"go\n")
        return Finished(137, output, cancelled=True)


def test_a_cancel_while_a_tool_runs_ends_the_run_cancelled(model_server: ModelServer) -> None:
    sandbox: ToolSandbox = CancelledSandbox()
    drive = Drive(model_server, "openai", sandbox)
    model_server.script(Reply(calls=[("bash", {"command": "echo go; sleep 100"})]), Reply(text="done"))
    outcome = drive()
    assert (outcome.status, outcome.answer, outcome.reason) == (
        RunStatus.CANCELLED,
        None,
        "cancelled while running",
    )
    assert drive.types() == ["model_call", "tool_call", "tool_result"] and len(model_server.requests) == 1
    assert drive.of("tool_result")[0]["output"] == "go\n\n[stopped]"


def test_a_reason_is_masked(drive: Drive) -> None:
    drive.server.script(Fail(401, f"Incorrect API key provided: Bearer {KEY}"))
    outcome = drive(mask=Mask([KEY]))
    assert outcome.reason is not None and KEY not in outcome.reason
    assert outcome.reason.startswith(
        "the model endpoint refused the API key (401: Incorrect API key provided: "
    )


def test_lone_surrogates_from_the_model_are_replaced(drive: Drive) -> None:
    """JSON's "\\ud800" is no character UTF-8 can hold: in the model's text, a tool's name and
    its arguments (escaped, or raw in Chat Completions' argument text) it becomes U+FFFD."""
    calls: list[tuple[str, Any]] = [
        ("ba\ud800sh", {"command": "true"}),
        ("bash", {"command": "echo a\udfffb"}),
    ]
    if drive.provider == "openai":
        calls.append(("bash", '{"command": "echo c\ud800d", "k\ud800": 1}'))
    drive.server.script(Reply(text="look \ud800", calls=calls), Reply(text="done \udc00"))
    outcome = drive(mask=Mask(["s3cret"]))
    assert (outcome.status, outcome.answer) == (RunStatus.SUCCEEDED, "done \ufffd")
    json.dumps(drive.events, ensure_ascii=False).encode()  # storable as UTF-8
    assert drive.of("model_call")[0]["text"] == "look \ufffd"
    wrong, echo, *raw = drive.of("tool_result")
    assert wrong["name"] == "ba\ufffdsh" and wrong["exit_code"] == 2
    assert echo["output"] == "a\ufffdb\n"
    if raw:
        assert raw[0]["output"] == "c\ufffdd\n"
        assert drive.of("tool_call")[2]["arguments"] == {"command": "echo c\ufffdd", "k\ufffd": 1}


def test_negative_token_counts_count_as_none(drive: Drive) -> None:
    drive.server.script(
        Reply(calls=[("bash", {"command": "true"})], input_tokens=-1_000_000, output_tokens=-5)
    )
    drive.server.forever(Reply(calls=[("bash", {"command": "true"})], input_tokens=50, output_tokens=60))
    outcome = drive(max_tokens=100)
    assert outcome.reason == "max_tokens (100) reached: 110 tokens in 2 model calls"
    assert outcome.usage.as_dict() == {"input_tokens": 50, "output_tokens": 60, "model_calls": 2}
    assert drive.of("model_call")[0]["input_tokens"] == 0


def test_token_counts_that_are_no_numbers_count_as_none() -> None:
    assert [tokens(v) for v in (None, "12", True, -3, 2.9, float("nan"), 10**30, 7)] == [
        0,
        0,
        0,
        0,
        2,
        0,
        MAX_TOKENS,
        7,
    ]


def test_a_loop_without_tools_says_so(drive: Drive) -> None:
    drive.server.script(Reply(calls=[("bash", {"command": "ls"})]), Reply(text="ok"))
    drive(tools=[])
    assert (
        drive.of("tool_result")[0]["output"] == "error: there is no tool 'bash'; this loop offers no tools."
    )


def test_a_nul_in_a_command_is_the_models_to_fix(drive: Drive) -> None:
    drive.server.script(Reply(calls=[("bash", {"command": "echo a\x00b"})]), Reply(text="ok"))
    drive()
    (result,) = drive.of("tool_result")
    assert (result["exit_code"], result["output"]) == (2, "error: a command cannot hold a NUL character.")
    assert drive.sandbox.commands == []


def test_a_tool_shortened_by_the_deadline_says_its_time_rounded(drive: Drive) -> None:
    drive.server.script(Reply(calls=[("bash", {"command": "sleep 5"})]))
    outcome = drive(timeout=1.73)
    assert outcome.status == RunStatus.TIMED_OUT
    (result,) = drive.of("tool_result")
    said = result["output"].rsplit("[timed out after ", 1)[1]
    assert said.endswith(" s]") and len(said[: -len(" s]")].partition(".")[2]) <= 1, said


def test_tool_calls_beyond_the_limit_of_a_turn_are_answered_with_an_error(drive: Drive) -> None:
    drive.server.script(Reply(calls=[("bash", {"command": f"echo {i}"}) for i in range(MAX_CALLS + 8)]))
    drive.server.script(Reply(text="ok"))
    outcome = drive()
    assert outcome.status == RunStatus.SUCCEEDED
    assert len(drive.of("tool_result")) == MAX_CALLS and len(drive.sandbox.commands) == MAX_CALLS
    assert drive.of("model_call")[0]["refused_calls"] == 8
    body = drive.server.requests[-1].body
    if drive.provider == "openai":
        sent = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    else:
        sent = [b["content"] for b in body["messages"][-1]["content"]]
    assert len(sent) == MAX_CALLS + 8 and sent[0] == "0\n"
    assert all(f"at most {MAX_CALLS} tool calls run per model turn" in text for text in sent[MAX_CALLS:])


@pytest.mark.parametrize("compressed", [False, True])
def test_an_answer_larger_than_orch_reads_fails_the_run(
    drive: Drive, compressed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that sends more than MAX_ANSWER bytes (here 64 KiB) is read no further: the
    SDKs would hold the whole answer in the server's memory. A compressed answer counts at its
    size once decoded, so a small gzip bomb is refused as well; it is not tried again."""
    monkeypatch.setattr(answer_size, "MAX_ANSWER", 64 * 1024)
    drive.server.script(Reply(text="x" * 200_000, gzip=compressed))
    drive.server.forever(Reply(text="a later answer"))
    outcome = drive()
    assert (outcome.status, outcome.reason) == (
        RunStatus.FAILED,
        "the model endpoint's answer is not usable: the answer is larger than 64 KiB, the most orch reads",
    )
    assert len(drive.server.requests) == 1


def test_an_answer_within_the_bound_is_read_whole_compressed_or_not(drive: Drive) -> None:
    drive.server.script(Reply(text="y" * 200_000, gzip=True))
    assert drive().answer == "y" * 200_000


def test_a_custom_tool_call_fails_the_run_naming_it(model_server: ModelServer, tmp_path: Path) -> None:
    """Chat Completions' custom tools are free text, not functions; orch offers none, so a model
    that calls one gets a run that fails and says so (it was dropped, and the run succeeded
    with an empty answer)."""
    model_server.script(Reply(custom=[("apply_patch", "*** Begin Patch")]))
    outcome = Drive(model_server, "openai", LocalSandbox(tmp_path))()
    assert (outcome.status, outcome.reason) == (
        RunStatus.FAILED,
        "the model endpoint's answer is not usable: the answer calls a custom tool (apply_patch), "
        "which orch never offers",
    )


def calls_left(before: set[threading.Thread]) -> list[threading.Thread]:
    """The model calls' threads (watch.py) started since `before` that have not ended within a
    bounded wait."""
    started = [t for t in threading.enumerate() if t not in before and t.name == "orch-loop-call"]
    for thread in started:
        thread.join(10)
    return [t for t in started if t.is_alive()]


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
def test_a_call_left_at_the_deadline_or_a_cancel_ends_with_its_connection(drive: Drive, stop: str) -> None:
    """An endpoint that trickles its answer (a byte at a time, each restarting the read timeout)
    kept the call the loop stopped waiting for going: a thread and a connection of the server
    for every run that ended so, for as long as the endpoint liked (found by a tester). The
    loop closes the model as it ends: the call ends, its connection closed, the outcome as it
    was."""
    drive.server.script(Trickle())
    before = set(threading.enumerate())
    if stop == "timeout":
        outcome = drive(timeout=1)
        assert (outcome.status, outcome.reason) == (RunStatus.TIMED_OUT, "timed out after 1 s")
    else:
        outcome = drive(should_stop=lambda: drive.server.trickling > 0)
        assert (outcome.status, outcome.reason) == (RunStatus.CANCELLED, "cancelled while running")
    assert calls_left(before) == []
    for _ in range(200):  # the endpoint sees the connection closed
        if drive.server.hung_up:
            break
        time.sleep(0.05)
    assert (drive.server.hung_up, drive.server.trickling) == (1, 0)


def test_a_call_cancelled_before_the_answer_begins_ends_at_once(drive: Drive) -> None:
    """An endpoint that takes minutes before it answers at all: the cancelled call's read
    would wait out its timeout (up to 600 s); the model's close ends it."""
    drive.server.script(Reply(text="late", delay=30))
    before = set(threading.enumerate())
    outcome = drive(should_stop=lambda: len(drive.server.requests) > 0)
    assert (outcome.status, outcome.reason) == (RunStatus.CANCELLED, "cancelled while running")
    assert calls_left(before) == []


def test_a_model_is_closed_when_its_loop_ends(drive: Drive) -> None:
    drive.server.script(Reply(text="done"))
    loop = config(drive.server, drive.provider)
    model = connect(loop, KEY)
    run_loop(loop, model, drive.sandbox, "hi", lambda *_: None)
    assert model.client.is_closed()  # type: ignore[attr-defined]


def big_outputs(count: int, size: int) -> Reply:
    """A turn of `count` bash calls, each writing `size` bytes."""
    return Reply(calls=[("bash", {"command": f"head -c {size} /dev/zero | tr '\\0' x"})] * count)


def test_a_conversation_past_its_bound_fails_before_it_is_sent(
    model_server: ModelServer, tmp_path: Path
) -> None:
    """An endpoint that reports no usage (so max_tokens cannot stop it), asking for 32 tools a
    turn of 1 MiB output each: the server held the whole conversation and sent it every turn,
    33 MB at the second call, 200 MB at the seventh (found by a tester). The conversation is
    bounded (MAX_CONVERSATION, 32 MiB): the tool result that would pass it fails the run,
    before a request that size is built, and no tool runs after it. (One provider: the bound is
    the driver's; both: the test below.)"""
    drive = Drive(model_server, "openai", LocalSandbox(tmp_path))
    drive.server.forever(big_outputs(MAX_CALLS, 1024**2))
    outcome = drive(tool_output_limit=1024**2)
    assert outcome.status == RunStatus.FAILED and outcome.reason is not None
    assert outcome.reason.startswith("the conversation grew past 32 MiB (to 32.0")
    assert outcome.reason.endswith(
        "MiB), the most a loop holds and sends the model, all of it with every call; lower "
        "loop.tool_output_limit (1 MiB) or have the system prompt ask for fewer tool calls a turn "
        "and shorter output"
    )
    assert len(drive.server.requests) == 1  # the first call's: none after it
    assert len(drive.of("tool_result")) == MAX_CALLS  # the 32nd result passed the bound


def test_the_conversations_bound_counts_every_turn(drive: Drive, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the model was sent before counts: a bound of 100 KiB, 24 KiB of results a turn,
    passed at the fifth turn's first result (4 x 24 KiB and the texts: under; one more: over)."""
    monkeypatch.setattr(conversation, "MAX_CONVERSATION", 100 * 1024)
    drive.server.forever(big_outputs(3, 8 * 1024))
    outcome = drive(tool_output_limit=16 * 1024)
    assert outcome.reason is not None and outcome.reason.startswith("the conversation grew past 100 KiB")
    assert len(drive.server.requests) == 5 and len(drive.of("tool_result")) == 13
    # The last request: the input and 4 turns with their results (Chat Completions: the system
    # prompt too, and a message per result).
    sent = len(drive.server.requests[-1].body["messages"])
    assert sent == (2 + 4 * (1 + 3) if drive.provider == "openai" else 1 + 4 * 2)


class Redirector:
    """An endpoint on 127.0.0.1 that answers every POST with `status` and `location`, counting
    them: an allowed endpoint that points the server elsewhere."""

    def __init__(self, status: int, location: str) -> None:
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.hits += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = b'{"error": {"message": "moved"}}'
                self.send_response(status)
                self.send_header("location", location)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_redirect_is_not_followed(
    model_server: ModelServer, tmp_path: Path, provider: str, status: int
) -> None:
    """The endpoint is one of the server's model_endpoints so that a workspace cannot make the
    server call addresses only it reaches; the client followed an allowed endpoint's redirect
    anywhere: a 307 to the server's own API made it POST the conversation there, and another
    host's answer came back as the model's (found by a tester). A redirect is followed nowhere:
    the run fails at once, naming the status and where it pointed, and is not tried again."""
    target = f"{model_server.url}/v1/chat/completions"  # a model that would answer, were it asked
    model_server.forever(Reply(text="an answer from elsewhere"))
    redirector = Redirector(status, target)
    try:
        base = f"{redirector.url}/v1" if provider == "openai" else redirector.url
        loop = LoopConfig(model="m", provider=provider, base_url=base)  # type: ignore[arg-type]
        outcome = run_loop(
            loop, connect(loop, KEY), LocalSandbox(tmp_path), "hi", lambda *_: None, backoff=QUICK
        )
    finally:
        redirector.close()
    assert (outcome.status, outcome.reason) == (
        RunStatus.FAILED,
        f"the model endpoint answered {status}, a redirect to {target}, which orch does not follow: "
        "set loop.base_url to where it points, if that address is in the server's model_endpoints",
    )
    assert model_server.requests == [] and redirector.hits == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("location", ["/v1/runs", "/v1/caf\u00e9"])
def test_a_relative_redirect_is_named_in_full(
    model_server: ModelServer, tmp_path: Path, provider: str, location: str
) -> None:
    """Made absolute as it came; a Location that is not ASCII made the bounded client's answer
    raise as it was made, and the run's reason blamed reaching the endpoint."""
    redirector = Redirector(307, location)
    try:
        base = f"{redirector.url}/v1" if provider == "openai" else redirector.url
        loop = LoopConfig(model="m", provider=provider, base_url=base)  # type: ignore[arg-type]
        outcome = run_loop(loop, connect(loop, KEY), LocalSandbox(tmp_path), "hi", lambda *_: None)
    finally:
        redirector.close()
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        f"the model endpoint answered 307, a redirect to {redirector.url}{location}, "
    )


@pytest.mark.parametrize("status", [300, 304])
def test_a_3xx_that_is_no_redirect_is_not_called_one(
    model_server: ModelServer, tmp_path: Path, status: int
) -> None:
    redirector = Redirector(status, "/v1/elsewhere")
    try:
        loop = LoopConfig(model="m", provider="openai", base_url=f"{redirector.url}/v1")
        outcome = run_loop(loop, connect(loop, None), LocalSandbox(tmp_path), "hi", lambda *_: None)
    finally:
        redirector.close()
    assert outcome.reason == f"the model endpoint answered {status}, which is no answer to a model call"
    assert redirector.hits == 1


@pytest.mark.parametrize("kind", ["urandom", "zero", "fifo", "directory"])
def test_edit_file_refuses_what_is_no_regular_file(
    model_server: ModelServer, tmp_path: Path, kind: str
) -> None:
    """edit_file read its file whole with `cat`: a device that never ends (/dev/urandom) was
    read until the tool's timeout, and ~1 MiB of its bytes, NULs among them, came back as the
    result, far past tool_output_limit; a FIFO waited out the timeout (found by a tester). What
    is there but is no regular file is refused at once, in a sentence."""
    path = {"urandom": "/dev/urandom", "zero": "/dev/zero", "fifo": "pipe", "directory": "sub"}[kind]
    if kind == "fifo":
        os.mkfifo(tmp_path / path)
    if kind == "directory":
        (tmp_path / path).mkdir()
    model_server.script(
        Reply(calls=[("edit_file", {"path": path, "old": "a", "new": "b"})]), Reply(text="ok")
    )
    drive = Drive(model_server, "openai", LocalSandbox(tmp_path))
    assert drive(tool_timeout=1, tool_output_limit=1024).status == RunStatus.SUCCEEDED
    (result,) = drive.of("tool_result")
    assert result["duration"] < 0.5  # not the tool's timeout
    assert (result["exit_code"], result["output"]) == (
        1,
        f"error: {path} is not a regular file (a directory, a device or a FIFO, say); "
        "edit_file edits files only.",
    )


@pytest.mark.parametrize("kind", ["urandom", "fifo", "directory"])
def test_read_file_refuses_what_is_no_regular_file(
    model_server: ModelServer, tmp_path: Path, kind: str
) -> None:
    """read_file read /dev/urandom until the tool's timeout and gave the model its bytes; a
    FIFO waited out the timeout (found by a tester, as for edit_file)."""
    path = {"urandom": "/dev/urandom", "fifo": "pipe", "directory": "sub"}[kind]
    if kind == "fifo":
        os.mkfifo(tmp_path / path)
    if kind == "directory":
        (tmp_path / path).mkdir()
    (tmp_path / "notes.txt").write_text("hello\n")
    model_server.script(
        Reply(calls=[("read_file", {"path": path}), ("read_file", {"path": "notes.txt"})]), Reply(text="ok")
    )
    drive = Drive(model_server, "openai", LocalSandbox(tmp_path))
    assert drive(tool_timeout=1, tool_output_limit=1024).status == RunStatus.SUCCEEDED
    refused, read = drive.of("tool_result")
    assert refused["duration"] < 0.5 and refused["exit_code"] == 1
    assert refused["output"] == (
        f"error: {path} is not a regular file (a directory, a device or a FIFO, say); read_file reads "
        "files only (list_files lists a directory)."
    )
    assert (read["exit_code"], read["output"]) == (0, "hello\n")  # a regular file, as before


class CountingSandbox(LocalSandbox):
    """A LocalSandbox that records how many bytes each command handed its output."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.sizes: list[int] = []

    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        done = super().exec(argv, stdin=stdin, timeout=timeout, output=output)
        self.sizes.append(output.size)
        return done


def test_edit_file_reads_at_most_1_mib_and_a_byte(model_server: ModelServer, tmp_path: Path) -> None:
    """A regular file is read no further than a byte past the 1 MiB edit_file takes: one of
    gigabytes (a sparse one is made in an instant) costs no more than one of 1 MiB and a byte."""
    (tmp_path / "big.txt").write_bytes(b"a" * (5 * 1024**2))
    model_server.script(
        Reply(calls=[("edit_file", {"path": "big.txt", "old": "a", "new": "b"})]), Reply(text="ok")
    )
    drive = Drive(model_server, "openai", CountingSandbox(tmp_path))
    drive()
    (result,) = drive.of("tool_result")
    assert (result["exit_code"], result["output"]) == (
        1,
        "error: big.txt is larger than 1 MiB; edit it with bash (sed, python).",
    )
    assert drive.sandbox.sizes == [1024**2 + 1]


def test_a_failed_read_for_edit_file_is_within_the_output_limit(
    model_server: ModelServer, tmp_path: Path
) -> None:
    """What edit_file's read said when it failed is its result (head's error, the timeout's
    note); read for the edit, up to 1 MiB and a byte, it is cut to tool_output_limit like any
    tool's output, with no NUL."""

    class Failing(LocalSandbox):
        def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
            output(b"\x00" * (1024**2 + 1) + b"\nhead: error reading 'a.txt': Input/output error\n")
            return Finished(1, output)

    model_server.script(
        Reply(calls=[("edit_file", {"path": "a.txt", "old": "a", "new": "b"})]), Reply(text="ok")
    )
    drive = Drive(model_server, "openai", Failing(tmp_path))
    drive(tool_output_limit=1024)
    (result,) = drive.of("tool_result")
    assert result["exit_code"] == 1 and "\x00" not in result["output"]
    assert len(result["output"].encode()) < 1100 and result["output"].endswith("Input/output error\n")
