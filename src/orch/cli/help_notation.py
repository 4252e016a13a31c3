"""Help in the usual command-line notation, as docs/cli.md writes commands.

Typer 0.29 shows a parameter in Python's spelling: a required argument in braces on the usage
line (`orch runs show [OPTIONS] {run_id}`, where braces read as "one of"), arguments by their
lowercase parameter names, and an option's value as its annotation (`--env <list[str]>`,
`--port <int range>`). Here, as click and most tools show them: an argument is its name in upper
case (`RUN`), in brackets when optional (`[PATH]`), followed by `...` when it repeats (`ID...`);
an option's value is an upper-case word (TEXT, INTEGER, NUMBER, PATH), or the metavar its
declaration gives where a name says more (`--env KEY=VALUE`, `--port PORT`). An argument's row in
the help names it and shows no type: its name says what it takes.

`install()` replaces typer's display hooks on its parameter classes (cli/main.py calls it when
typer has them); it imports nothing typer has not imported already, so no command starts slower.
tests/unit/test_cli_help_reads_well.py renders every command's help.
"""

from __future__ import annotations

from typing import Any, get_args

import typer.core
from typer._param_types import normalize_choice_value

# Python's types in upper-case words, as click names them (a float is a NUMBER: "0.5", "60").
TYPE_NAMES: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", bool: "BOOLEAN"}


def _type_name(annotation: Any) -> str:
    if annotation in TYPE_NAMES:
        return TYPE_NAMES[annotation]
    return str(getattr(annotation, "__name__", annotation)).upper()


def display_type(param: typer.core.TyperArgument | typer.core.TyperOption, ctx: Any) -> str:
    """The value's type in upper-case words: TEXT, INTEGER, NUMBER, PATH, [a|b] for choices."""
    desc = param.type_descriptor
    if desc.is_choice:
        return (
            "["
            + "|".join(normalize_choice_value(c, desc.case_sensitive, ctx) for c in desc.choices or ())
            + "]"
        )
    if desc.is_path:
        return desc.path_type.upper()  # PATH, FILE or DIR
    if desc.is_tuple:
        return " ".join(_type_name(arg) for arg in get_args(desc.annotation))
    if desc.is_list:  # a repeated option: one value's type (its help says it repeats)
        (element,) = get_args(desc.annotation)
        return _type_name(element)
    return _type_name(desc.annotation)  # a range's too: typer shows its bounds after it


def _argument_name(self: typer.core.TyperArgument) -> str:
    """The declaration's metavar, else the parameter's name in upper case (RUN, AGENT, PATH)."""
    return self.metavar if self.metavar is not None else (self.name or "").upper()


def _argument_usage(self: typer.core.TyperArgument) -> str:
    """`RUN` when required, `[PATH]` when optional, `ID...` when it repeats; a metavar that says
    its repetition itself (`-- COMMAND [ARG...]`) is shown as it is."""
    name = self.display_name_raw
    if not self.required:
        name = f"[{name}]"
    if self.nargs != 1 and "..." not in name:
        name += "..."
    return name


def _option_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """A flag takes no value: `--json <bool>` in help read as if it took one."""
    if self.is_flag or self.count:
        return None
    return self.metavar if self.metavar is not None else self.display_type(ctx)


def _no_argument_type(self: typer.core.TyperArgument, ctx: Any) -> str | None:
    """An argument's name (RUN, PATH) says what it takes: `RUN TEXT` would say it twice."""
    return None


def install() -> None:
    """Replace typer's hooks; every command's help and usage errors read as above from then on."""
    core = typer.core
    core._TyperParameter.display_type = display_type  # type: ignore[method-assign,assignment]
    core.TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment,method-assign]
    core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = _no_argument_type  # type: ignore[method-assign,assignment]
    core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
