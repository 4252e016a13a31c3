"""Console output and the one place where errors become exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

from orch.errors import OrchError


def _console(stderr: bool = False) -> Console:
    """A terminal's console is as wide as the terminal; piped or redirected output prints whole
    rows (as kubectl and podman do), unless COLUMNS says otherwise."""
    found = Console(stderr=stderr, highlight=False)
    if found.is_terminal or "COLUMNS" in os.environ:
        return found
    return Console(stderr=stderr, highlight=False, width=UNBOUNDED)


UNBOUNDED = 100_000
console = _console()
err_console = _console(stderr=True)


def fail(error: OrchError) -> NoReturn:
    err_console.print(f"[red]✗[/red] {error.message}", markup=True, soft_wrap=True)
    if error.fix:
        err_console.print(f"  {error.fix}", markup=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn orch's errors into a plain message and the right exit code; nothing else is caught."""
    try:
        yield
    except OrchError as e:
        fail(e)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        raise typer.Exit(130) from None


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a Typer command so domain errors exit cleanly."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with errors_to_exit():
            return fn(*args, **kwargs)

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def ok(text: str) -> None:
    console.print(f"[green]✓[/green] {text}", soft_wrap=True)


def warn(text: str) -> None:
    console.print(f"[yellow]![/yellow] {text}", soft_wrap=True)
