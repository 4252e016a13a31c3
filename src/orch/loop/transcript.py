"""A managed loop's events as lines a person reads: the run's log while the loop runs (what
`orch run` shows) and `orch runs events` print them. Light: the CLI imports it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LOG_LINE = 200  # characters of a text shown on one line


def transcript_line(kind: str, data: Mapping[str, Any]) -> str:
    """One log line for an event: what `orch run` shows while a loop runs ("" for none)."""
    if kind == "model_call":
        tokens = f"{data.get('input_tokens', 0)} in, {data.get('output_tokens', 0)} out"
        said = _short(str(data.get("text") or ""))
        return f"◆ model ({tokens}, {float(data.get('duration') or 0):.1f} s)" + (f": {said}" if said else "")
    if kind == "tool_call":
        return f"→ {data.get('name')} {_short(_arguments(data.get('arguments')))}"
    if kind == "tool_result":
        code = data.get("exit_code")
        return f"  {'✓' if code == 0 else '✗ exit ' + str(code)} {_short(str(data.get('output') or ''))}"
    return ""


def _arguments(arguments: object) -> str:
    if isinstance(arguments, dict) and len(arguments) == 1:
        return str(next(iter(arguments.values())))
    return str(arguments)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= LOG_LINE else flat[: LOG_LINE - 1] + "…"
