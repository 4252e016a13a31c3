"""Plain command-line values converted without pydantic.

Typer 0.26 and later convert each parameter's value with a pydantic TypeAdapter, built the first
time the parameter is seen, even for `--help` when it is not given: importing pydantic and
building the adapters cost more than the rest of `orch env list`'s start. The values orch's quick
commands take are plain: text, whole numbers, flags and lists of text. Those are converted here,
to what typer's adapters give; any other value (and every value of any other parameter) still
goes to typer's own conversion, which also words the errors.

This replaces one function of typer's internals, typer.core.build_runtime_param (cli/main.py
imports this module only when typer has it; before 0.26, click converted, without pydantic);
tests/unit/test_cli_start.py fails if this stops keeping pydantic out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import typer.core
from typer import _coercion
from typer._coercion import RuntimeParam, TypeDescriptor

_WHOLE = re.compile(r"-?[0-9]+")
_NOT_PLAIN = object()


def _plain_value(annotation: Any, value: Any) -> Any:
    """`value` converted for `annotation` as typer's adapter would, or _NOT_PLAIN."""
    if annotation is str and isinstance(value, str):
        return value
    if annotation is int:
        if type(value) is int:
            return value
        if isinstance(value, str) and _WHOLE.fullmatch(value):
            return int(value)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation == list[str] and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    return _NOT_PLAIN


def _is_plain(descriptor: TypeDescriptor) -> bool:
    info = descriptor.parameter_info
    return (
        (descriptor.annotation in (str, int, bool) or descriptor.annotation == list[str])
        and descriptor.file_annotation is None
        and not descriptor.is_path
        and info.parser is None
        and info.min is None
        and info.max is None
        and not info.clamp
    )


@dataclass(frozen=True)
class PlainFirst(RuntimeParam):
    """Converts plain values itself and hands any other to typer's conversion (built then)."""

    descriptor: TypeDescriptor

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        plain = _plain_value(self.annotation, value)
        if plain is not _NOT_PLAIN:
            return plain
        return _coercion.build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)


def _build(descriptor: TypeDescriptor) -> RuntimeParam:
    if _is_plain(descriptor):
        return PlainFirst(descriptor.parameter_info, descriptor.annotation, descriptor)
    return _coercion.build_runtime_param(descriptor)


def install() -> None:
    """Route typer's conversions through PlainFirst: typer.core looks this name up when a
    parameter first converts a value (the function itself stays in typer._coercion)."""
    typer.core.build_runtime_param = _build  # type: ignore[attr-defined]
