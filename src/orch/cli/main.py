"""The `orch` entry point: every command is registered by name, and its module is imported only
when that command runs (or when `orch --help` lists them all).

Importing every noun's module up front made each command pay for all of them (the bundle
packer's pydantic models, the Dockerfile validator, rich.progress): ~0.35 s before a light
command like `orch env list` did anything. tests/unit/test_cli_start.py keeps them out.
"""

from __future__ import annotations

from orch.cli import interrupt

interrupt.outside_commands()  # before the imports below, which take most of a command's start

import importlib  # noqa: E402
from collections.abc import Iterator, MutableMapping  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from orch.cli import lazy_help  # noqa: E402

lazy_help.install()  # before typer formats any help (it imports typer.rich_utils then)

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402
from typer.main import get_command_from_info, get_group_from_info  # noqa: E402
from typer.models import CommandInfo, TyperInfo  # noqa: E402

from orch import __version__  # noqa: E402

if TYPE_CHECKING:
    from typer._click import Command

if hasattr(typer.core, "build_runtime_param"):  # typer 0.26+ converts values with pydantic
    from orch.cli import plain_values

    plain_values.install()

if hasattr(typer.core.TyperArgument, "_usage_display_name"):  # typer 0.29+ shows Python's types
    from orch.cli import help_notation

    help_notation.install()

# Each command: the orch.cli module that defines it, and its attribute there: a Typer app (a
# noun and its verbs) or a function (a command of its own). In the order `orch --help` lists.
COMMANDS: dict[str, tuple[str, str]] = {
    "publish": ("agent", "publish"),
    "run": ("run", "run"),
    "server": ("server", "server"),
    "login": ("server", "login"),
    "env": ("env", "app"),
    "agents": ("agent", "app"),
    "runs": ("run", "app"),
    "service": ("service", "app"),
    "sandbox": ("sandbox", "app"),
    "admin": ("admin", "app"),
    "workspace": ("workspace", "workspace_app"),
    "token": ("workspace", "token_app"),
    "secret": ("secret", "app"),
    "node": ("node", "app"),
}


class LazyCommands(MutableMapping[str, "Command"]):
    """The group's commands by name: every name is known at once, each command is built (its
    module imported) on first lookup. As a mapping, every reader of TyperGroup.commands (the
    lookup, the listing, "Did you mean …?") sees all the names without special cases."""

    def __init__(self) -> None:
        self._built: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = _build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("orch's commands are fixed")

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(COMMANDS), **self._built})

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._built.keys())


class LazyGroup(TyperGroup):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands()


app = typer.Typer(
    name="orch",
    cls=LazyGroup,
    help="Run AI agents in isolated sandboxes, in environments your workspace shapes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _build(name: str) -> Command:
    """The click command for `name`, built as `add_typer` and `command` would have built it."""
    module, attr = COMMANDS[name]
    target = getattr(importlib.import_module(f"orch.cli.{module}"), attr)
    if isinstance(target, typer.Typer):
        return get_group_from_info(
            TyperInfo(target, name=name),
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode,
            suggest_commands=app.suggest_commands,
        )
    return get_command_from_info(
        CommandInfo(name=name, callback=target),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
    )


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"orch {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print orch's version and exit."
    ),
) -> None:
    # No docstring: the app's help stays the one above.
    pass


def main() -> None:
    interrupt.entry_point()  # until the command's own code runs (output.command)
    try:
        app()
    except Exception as e:  # noqa: BLE001 - a bug: still one sentence, never a traceback
        from orch.cli.output import err_console

        err_console.print(f"✗ orch failed unexpectedly ({type(e).__name__}: {e}).", markup=False)
        err_console.print("  This is a bug; please report it with the command you ran.", markup=False)
        raise SystemExit(1) from None


# Imported, not run (a test, a library): Ctrl-C is Python's own again from here on.
interrupt.inside_command()

if __name__ == "__main__":
    main()
