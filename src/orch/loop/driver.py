"""The managed loop itself: the system prompt and the run's input go to the model; every tool
call it makes runs in the sandbox and its result goes back; this repeats until the model answers
without a tool call, and that answer is the run's result. Each step is an event, handed to
`emit` as it happens (docs/loop.md, "Events")."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.conversation import Conversation
from orch.loop.events import Emit, Events
from orch.loop.model import Message, Model, Request, ToolCall, ToolResult, Turn
from orch.loop.outcome import Outcome, Stopped, Usage, failed
from orch.loop.retry import Backoff, call
from orch.loop.sandbox import ToolSandbox
from orch.loop.tools import SPECS, Tools
from orch.loop.watch import Watch
from orch.models import RunStatus
from orch.secret.mask import Mask

CALL_TIMEOUT = 600.0  # seconds one model call may take, when the run's deadline is further
MAX_OUTPUT_TOKENS = 8192  # what one call may answer (the Messages API needs a number), within max_tokens
MAX_CALLS = 32  # tool calls run per model turn; the model's others are answered with an error
ANSWER_LIMIT = 1024 * 1024  # bytes of the answer kept: a run's stdout bound (services/run_output.py)
# Characters of a reason kept: a backstop, as every part of a reason that an endpoint or a model
# wrote is bounded already (model.quoted), so that no reason is a row of megabytes.
REASON_LIMIT = 2000
NO_INPUT = "(the run has no input)"


def _never() -> bool:
    return False


def first_message(run_input: str) -> str:
    """The first user message: the `prompt` field of a JSON object input that has one (its JSON
    when it is not text), the text of a JSON string, else the input as it is."""
    try:
        data = json.loads(run_input)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and "prompt" in data:
        prompt = data["prompt"]
        run_input = prompt if isinstance(prompt, str) else json.dumps(prompt)
    elif isinstance(data, str):
        run_input = data
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
    mask: Mask = Mask(),  # noqa: B008 - never changed
    answer_limit: int = ANSWER_LIMIT,
    backoff: Backoff = Backoff(),  # noqa: B008 - frozen
) -> Outcome:
    """Drive the loop to its end: the answer, or the reason it stopped. `mask` (the run's
    secrets) is applied to everything the events, the answer and the reason carry, and to the
    tools' output before it is clipped; the answer is kept within `answer_limit` bytes, the
    reason within REASON_LIMIT characters (masked first, then cut). The
    model is closed when the loop ends (`Model.close`): a run's model is its own."""
    watch = Watch(timeout, should_stop)
    usage = Usage()
    events = Events(emit, mask, answer_limit)
    tools = Tools(sandbox, float(config.tool_timeout), config.tool_output_limit, mask)
    conversation = Conversation(config.system, first_message(run_input), config.tool_output_limit)
    try:
        while True:
            turn = _model_call(config, model, conversation.messages, usage, watch, backoff, events, mask)
            if not turn.calls:
                answer, truncated = events.final(turn.text)
                return Outcome(RunStatus.SUCCEEDED, answer, None, usage, truncated)
            _check_limits(config, usage)
            conversation.add(turn)
            for c in turn.calls[:MAX_CALLS]:
                conversation.add(_tool_call(c, config, tools, watch, events))
            for c in turn.calls[MAX_CALLS:]:
                conversation.add(ToolResult(c, _TOO_MANY, True))
    except Stopped as stop:
        return Outcome(stop.status, None, mask.quote(stop.reason, REASON_LIMIT), usage)
    finally:
        model.close()  # a call the loop stopped waiting for ends now, its connection with it


_TOO_MANY = (
    f"error: at most {MAX_CALLS} tool calls run per model turn, and this one came after them: it did "
    "not run. Ask for it again in your next turn."
)


def _model_call(
    config: LoopConfig,
    model: Model,
    messages: list[Message],
    usage: Usage,
    watch: Watch,
    backoff: Backoff,
    events: Events,
    mask: Mask,
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
    turn, attempts = call(model, request, backoff, watch, config.api_key_secret, mask)
    usage.input_tokens += turn.input_tokens
    usage.output_tokens += turn.output_tokens
    usage.model_calls += 1
    refused = max(0, len(turn.calls) - MAX_CALLS)
    events.model_call(usage.model_calls, turn, time.monotonic() - began, attempts, refused)
    return turn


def _check_limits(config: LoopConfig, usage: Usage) -> None:
    """Before the tools of a turn run: the model wants more, and the run may not go on."""
    if usage.model_calls >= config.max_turns:
        raise failed(f"max_turns ({config.max_turns}) reached: the model still asked for tools")
    if usage.tokens >= config.max_tokens:
        calls = f"{usage.model_calls} model call{'' if usage.model_calls == 1 else 's'}"
        raise failed(f"max_tokens ({config.max_tokens}) reached: {usage.tokens} tokens in {calls}")


def _tool_call(
    tool_call: ToolCall, config: LoopConfig, tools: Tools, watch: Watch, events: Events
) -> ToolResult:
    watch.check()
    events.tool_call(tool_call)
    left = watch.left()
    began = time.monotonic()
    timeout = config.tool_timeout if left is None else min(config.tool_timeout, max(left, 0.1))
    outcome = tools.run(tool_call, config.tools, timeout)
    events.tool_result(tool_call, outcome.exit_code, outcome.output, time.monotonic() - began)
    if outcome.cancelled:
        raise Stopped(RunStatus.CANCELLED, "cancelled while running")
    if outcome.gone:  # its result is no command's own end, and no further tool can run
        raise failed(f"the tools' sandbox stopped: {outcome.gone}")
    watch.check()
    return ToolResult(tool_call, outcome.for_model(), outcome.exit_code != 0)
