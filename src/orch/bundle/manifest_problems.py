"""Pydantic's validation errors turned into one InvalidInput that names each problem's line and key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from orch.bundle.yaml_source import YamlSource
from orch.errors import InvalidInput

# Validators raise errors of this type with the message and fix in the context; anything else
# comes from pydantic itself and is reworded below.
_OURS = "orch"


def problem(message: str, fix: str) -> PydanticCustomError:
    """A validation failure carrying our own message and fix."""
    return PydanticCustomError(_OURS, "{message}", {"message": message, "fix": fix})


_YAML = {True: "true", False: "false", None: "an empty value (null)"}


def show(value: object) -> str:
    """A value as the user wrote it in YAML (`true`, not Python's `True`), cut short when long."""
    if value is None or isinstance(value, bool):
        return _YAML[value]
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


KnownKeys = Mapping[tuple[str, ...], Sequence[str]]


def invalid_manifest(
    exc: ValidationError, source: YamlSource, filename: str, known_keys: KnownKeys
) -> InvalidInput:
    """One error listing every problem, in line order, each as `FILE line N: KEY: what is wrong`."""
    problems: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        # Pydantic marks a failing dict key with an extra "[key]" step; the key itself is the place.
        steps = [step for step in error["loc"] if step != "[key]"]
        path = [str(step) for step in steps]
        message, fix = _describe(error, path, known_keys)
        line = source.line_of(steps)  # list items by their index: the item's own line
        where = f"{filename} line {line}" if line is not None else filename
        key = ".".join(path)
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        problems.append({"line": line, "key": key, "message": text, "fix": fix})
    problems.sort(key=lambda p: p["line"] or 0)
    fixes = list(dict.fromkeys(p["fix"] for p in problems))
    return InvalidInput("\n".join(p["message"] for p in problems), " ".join(fixes), problems=problems)


def _describe(error: ErrorDetails, path: list[str], known_keys: KnownKeys) -> tuple[str, str]:
    kind, context = error["type"], error.get("ctx") or {}
    if kind == _OURS:
        return str(context["message"]), str(context["fix"])
    if kind == "extra_forbidden":
        known = known_keys.get(tuple(path[:-1]), [])
        return "unknown key.", f"Known keys here: {', '.join(known)}." if known else "Remove it."
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return (
            f"{show(error['input'])} is not a mapping.",
            f"Write `{path[-1] if path else 'key'}:` followed by indented `key: value` lines.",
        )
    if kind == "string_type":
        return f"{show(error['input'])} is not text.", "Write it as text, in quotes if need be."
    if kind == "missing":
        where = f"under `{path[-2]}:`" if len(path) > 1 else "to the manifest"
        return "is missing.", f"Add `{path[-1]}:` {where}."
    if kind == "invalid_key":
        return "the key is not text.", "Write keys as plain words."
    return f"{error['msg']}.", "Check the value against the manifest's keys."
