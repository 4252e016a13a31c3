"""Every command's help in the notation docs/cli.md writes commands in (cli/help_notation.py):
arguments in upper case (`RUN`, `[PATH]`, `ID...`), option values as upper-case words (`TEXT`,
`KEY=VALUE`), never Python's spelling (`{run_id}`, `<list[str]>`, `<int range>`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer.main
from typer.testing import CliRunner

from orch.cli import main as cli_main

PYTHON_SPELLING = re.compile(r"[{}]|<[a-z]|\blist\[")  # braces, <str>, <int range>, list[str]
SNAKE = re.compile(r"(?<![-\w])[a-z][a-z0-9]*(?:_[a-z0-9]+)*(?![\w])")  # run_id, agent
BOUNDS = re.compile(r"\[[0-9.]*<=x<=[0-9.]*\]")  # a number's range, as click writes it


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name in getattr(command, "commands", {}):
        yield from _commands(command.commands[name], (*path, name))


def _help(path: tuple[str, ...]) -> str:
    shown = CliRunner().invoke(cli_main.app, [*path, "--help"], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, (path, shown.output)
    return shown.output


def _usage(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.strip().startswith("Usage:")]
    return " ".join(line.split()[1:])


def _rows(output: str, command: Any) -> dict[str, str]:
    """Each parameter's row in the Arguments and Options panels up to its help: its names and its
    value's type, whitespace collapsed (`--env -e KEY=VALUE`)."""
    rows = {}
    for param in command.params:
        if not param.help:
            continue
        start = " ".join(param.help.replace("\\[", "[").split())
        (line,) = [line for line in output.splitlines() if start in " ".join(line.split())]
        flat = " ".join(line.strip("│ \n").split())
        rows[param.name] = flat[: flat.index(start)].removeprefix("* ").strip()
    return rows


def test_every_usage_line_and_type_column_reads_as_cli_notation() -> None:
    root = typer.main.get_command(cli_main.app)
    checked = 0
    for path, command in _commands(root):
        output = _help(path)
        usage = _usage(output)
        prog = " ".join(["orch", *path])
        assert usage.startswith(prog), (path, usage)
        after = usage.removeprefix(prog)
        assert not PYTHON_SPELLING.search(after), (path, usage)
        assert not SNAKE.search(after), (path, usage)
        for name, row in _rows(output, command).items():
            assert not PYTHON_SPELLING.search(row), (path, name, row)
            shown = " ".join(word for word in BOUNDS.sub("", row).split() if not word.startswith("-"))
            assert not SNAKE.search(shown), (path, name, row)
            checked += 1
    assert checked >= 80  # every parameter of every command, not a few


def test_known_commands_read_as_docs_cli_md_writes_them() -> None:
    assert _usage(_help(("runs", "show"))) == "orch runs show [OPTIONS] RUN"
    assert _usage(_help(("run",))) == "orch run [OPTIONS] AGENT"
    assert _usage(_help(("env", "logs"))) == "orch env logs [OPTIONS] ENV"
    assert _usage(_help(("publish",))) == "orch publish [OPTIONS] [PATH]"
    assert _usage(_help(("sandbox", "rm"))) == "orch sandbox rm [OPTIONS] ID..."
    assert _usage(_help(("sandbox", "exec"))) == "orch sandbox exec [OPTIONS] ID -- COMMAND [ARG...]"
    assert _usage(_help(("node", "stop"))) == "orch node stop [OPTIONS] [NAME]"

    root = typer.main.get_command(cli_main.app)
    run = _rows(_help(("run",)), root.commands["run"])
    assert run["env"] == "--env -e KEY=VALUE"
    assert run["input"] == "--input -i TEXT"
    assert run["timeout"] == "--timeout -t INTEGER"
    assert run["agent"] == "AGENT"  # an argument: its name says what it takes
    server = _rows(_help(("server",)), root.commands["server"])
    assert server["port"] == "--port PORT [0<=x<=65535]"
    exec_ = _rows(_help(("sandbox", "exec")), root.commands["sandbox"].commands["exec"])
    assert exec_["timeout"] == "--timeout -t NUMBER" and exec_["stdin"] == "--stdin -i"  # a flag: no type


def test_a_missing_argument_is_named_as_the_usage_line_names_it() -> None:
    missing = CliRunner().invoke(cli_main.app, ["runs", "show"], env={"COLUMNS": "200"})
    assert missing.exit_code == 2 and "Missing argument 'RUN'." in missing.output
