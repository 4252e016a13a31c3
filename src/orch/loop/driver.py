"""The managed loop itself: the system prompt and the run's input go to the model; every tool
call it makes runs in the sandbox and its result goes back; this repeats until the model answers
without a tool call, and that answer is the run's result. Each step is an event, handed to
`emit` as it happens (docs/loop.md, "Events")."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.model import Message, Model, Request, Results, ToolCall, ToolResult, Turn, UserText
from orch.loop.outcome import Outcome, Stopped, Usage, failed
from orch.loop.retry import Backoff, call
from orch.loop.sandbox import SandboxGone, ToolSandbox
from orch.loop.tools import SPECS, Tools
from orch.loop.watch import Watch
from orch.models import RunStatus

Emit = Callable[[str, dict[str, Any]], None]
CALL_TIMEOUT = 600.0  # seconds one model call may take, when the run's deadline is further
MAX_OUTPUT_TOKENS = 8192  # what one call may answer (the Messages API needs a number), within max_tokens
NO_INPUT = "(the run has no input)"


def _same(text: str) -> str:
    return text


def _never() -> bool:
    return False


def first_message(run_input: str) -> str:
    """The first user message: the `prompt` field of a JSON object input that has one, else the
    input as it is."""
    try:
        data = json.loads(run_input)
    except ValueError:
        data = None
    if isinstance(data, dict) and "prompt" in data:
        prompt = data["prompt"]
        run_input = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return run_input if run_input.strip() else NO_INPUT


def run_loop(
    config: LoopConfig,
    model: Model,
    sandbox: ToolSandbox,
    run_input: str,
    emit: Emit,
    *,
    timeout: float | None = None,
    should_stop: Callable[[], bool] = _never,
    mask: Callable[[str], str] = _same,
    backoff: Backoff = Backoff(),  # noqa: B008 - frozen
) -> Outcome:
    """Drive the loop to its end: the answer, or the reason it stopped. `mask` is applied to all
    the text events and the answer carry (the run's secrets become `***`)."""
    watch = Watch(timeout, should_stop)
    usage = Usage()
    tools = Tools(sandbox, float(config.tool_timeout), config.tool_output_limit)
    messages: list[Message] = [UserText(first_message(run_input))]
    try:
        while True:
            turn = _model_call(config, model, messages, usage, watch, backoff, emit, mask)
            if not turn.calls:
                answer = mask(turn.text)
                emit("final", {"text": answer})
                return Outcome(RunStatus.SUCCEEDED, answer, None, usage)
            _check_limits(config, usage)
            messages.append(turn)
            results = tuple(_tool_call(c, config, tools, watch, emit, mask) for c in turn.calls)
            messages.append(Results(results))
    except Stopped as stop:
        return Outcome(stop.status, None, stop.reason, usage)
    except SandboxGone as exc:
        return Outcome(RunStatus.FAILED, None, f"the tools' sandbox stopped: {exc}", usage)


def _model_call(
    config: LoopConfig,
    model: Model,
    messages: list[Message],
    usage: Usage,
    watch: Watch,
    backoff: Backoff,
    emit: Emit,
    mask: Callable[[str], str],
) -> Turn:
    left = watch.left()
    request = Request(
        system=config.system,
        messages=list(messages),
        tools=[SPECS[name] for name in config.tools],
        max_output_tokens=max(1, min(MAX_OUTPUT_TOKENS, config.max_tokens - usage.tokens)),
        timeout=CALL_TIMEOUT if left is None else max(1.0, min(CALL_TIMEOUT, left)),
    )
    began = time.monotonic()
    turn, attempts = call(model, request, backoff, watch, config.api_key_secret)
    usage.input_tokens += turn.input_tokens
    usage.output_tokens += turn.output_tokens
    usage.model_calls += 1
    event: dict[str, Any] = {
        "turn": usage.model_calls,
        "input_tokens": turn.input_tokens,
        "output_tokens": turn.output_tokens,
        "duration": round(time.monotonic() - began, 3),
        "attempts": attempts,
    }
    if turn.text and turn.calls:  # a final answer's text is the `final` event's
        event["text"] = mask(turn.text)
    emit("model_call", event)
    return turn


def _check_limits(config: LoopConfig, usage: Usage) -> None:
    """Before the tools of a turn run: the model wants more, and the run may not go on."""
    if usage.model_calls >= config.max_turns:
        raise failed(f"max_turns ({config.max_turns}) reached: the model still asked for tools")
    if usage.tokens >= config.max_tokens:
        raise failed(
            f"max_tokens ({config.max_tokens}) reached: {usage.tokens} tokens "
            f"in {usage.model_calls} model calls"
        )


def _tool_call(
    tool_call: ToolCall,
    config: LoopConfig,
    tools: Tools,
    watch: Watch,
    emit: Emit,
    mask: Callable[[str], str],
) -> ToolResult:
    watch.check()
    try:
        arguments: object = json.loads(tool_call.arguments)
    except ValueError:
        arguments = tool_call.arguments
    emit(
        "tool_call",
        {"call_id": tool_call.id, "name": tool_call.name, "arguments": _masked(arguments, mask)},
    )
    left = watch.left()
    began = time.monotonic()
    timeout = config.tool_timeout if left is None else min(config.tool_timeout, max(left, 0.1))
    outcome = tools.run(tool_call, config.tools, timeout)
    emit(
        "tool_result",
        {
            "call_id": tool_call.id,
            "name": tool_call.name,
            "exit_code": outcome.exit_code,
            "output": mask(outcome.output),
            "duration": round(time.monotonic() - began, 3),
        },
    )
    watch.check()
    return ToolResult(tool_call, outcome.for_model(), outcome.exit_code != 0)


def _masked(value: object, mask: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _masked(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    return value
