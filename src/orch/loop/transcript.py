"""A managed loop's events as lines a person reads: the run's log while the loop runs (what
`orch run` shows) and `orch runs events` print them. Light: the CLI imports it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

LOG_LINE = 200  # characters of a text shown on one line


def transcript_line(kind: str, data: Mapping[str, Any]) -> str:
    """One log line for an event: what `orch run` shows while a loop runs ("" for none)."""
    if kind == "model_call":
        tokens = f"{data.get('input_tokens', 0)} in, {data.get('output_tokens', 0)} out"
        said = _short(str(data.get("text") or ""))
        line = f"◆ model ({tokens}, {float(data.get('duration') or 0):.1f} s)" + (f": {said}" if said else "")
        if refused := data.get("refused_calls"):  # beyond the calls a turn runs (driver.MAX_CALLS)
            line += f" · {refused} more tool call{'s' if refused != 1 else ''} refused: over the turn's limit"
        return line
    if kind == "tool_call":
        name = str(data.get("name"))
        return f"→ {name} {_short(tool_call_text(name, data.get('arguments')))}"
    if kind == "tool_result":
        code = data.get("exit_code")
        return f"  {'✓' if code == 0 else '✗ exit ' + str(code)} {_short(str(data.get('output') or ''))}"
    return ""


def tool_call_text(name: str, arguments: Any) -> str:
    """A tool call's arguments as a person reads them: bash's command, a file tool's path (with
    write_file's size), anything else as KEY=VALUE pairs; never a Python dict, and a value that
    is no text as JSON (`null`, not Python's `None`)."""
    if isinstance(arguments, str):
        return arguments  # the model's text, when it was not JSON
    if not isinstance(arguments, dict):  # JSON, but not an object: `null`, `[1, 2]`
        return json.dumps(arguments, ensure_ascii=False)
    said = {
        key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in arguments.items()
    }
    if name == "bash" and "command" in said:
        return said["command"]
    if name == "list_files":
        return said.get("path") or "."
    if name in ("read_file", "edit_file") and "path" in said:
        return said["path"]
    if name == "write_file" and "path" in said:
        return f"{said['path']} ({len(said.get('content', '').encode())} bytes)"
    return " ".join(f"{key}={value}" for key, value in said.items())


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= LOG_LINE else flat[: LOG_LINE - 1] + "…"
