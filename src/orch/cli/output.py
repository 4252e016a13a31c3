"""Console output and the one place where errors become exit codes.

The commands write rich's markup ("[green]✓[/green]", `escape(user_text)`) and tables from
`Table`. On a terminal that goes through rich (colours, the terminal's width). Anything else (a
pipe, a file, `--json` beside it, a test runner) gets plain text: the markup taken out, every line
whole (as kubectl and podman print them), and rich never imported, which a quick command's start
would otherwise pay for (tests/unit/test_cli_start.py keeps it out).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, NoReturn

import typer

from orch.cli import interrupt
from orch.errors import OrchError

if TYPE_CHECKING:
    import rich.console

# rich.markup's own patterns: a tag, and what `escape` must protect.
_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
_TAG_LIKE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """`text` with anything that would read as markup escaped (rich.markup.escape)."""
    text = _TAG_LIKE.sub(lambda m: f"{m[1]}{m[1]}\\{m[2]}", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def plain(markup: str) -> str:
    """The text rich would show for `markup`, without its styles."""
    if "[" not in markup:
        return markup
    out, position = [], 0
    for match in _TAG.finditer(markup):
        start, end = match.span()
        out.append(markup[position:start].replace("\\[", "["))
        position = end
        escapes = match[2]
        backslashes, escaped = divmod(len(escapes), 2)
        out.append("\\" * backslashes)
        if escaped:
            out.append(match[1][len(escapes) :])
    out.append(markup[position:].replace("\\[", "["))
    return "".join(out)


def _width(text: str) -> int:
    """Columns `text` takes on a terminal: wide (East Asian) characters two, combining ones none."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text
    )


def _pad(cell: str, width: int) -> str:
    return cell + " " * (width - _width(cell))


class Table:
    """A table in the CLI's one style: no borders, bold headers, flush left. Columns take rich's
    add_column options, for terminals; plain output prints every cell whole."""

    def __init__(self) -> None:
        self.columns: list[tuple[str, dict[str, Any]]] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(self, header: str, **options: Any) -> None:
        self.columns.append((header, options))

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def lines(self) -> list[str]:
        grid = [[plain(h) for h, _ in self.columns], *([plain(c) for c in row] for row in self.rows)]
        widths = [
            max([_width(line[i]) for line in grid] + [options.get("min_width") or 0])
            for i, (_, options) in enumerate(self.columns)
        ]
        return [
            "  ".join(_pad(cell, width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in grid
        ]

    def rich(self) -> Any:
        from rich.table import Table as RichTable

        table = RichTable(box=None, header_style="bold", pad_edge=False)
        for header, options in self.columns:
            table.add_column(header, **options)
        for row in self.rows:
            table.add_row(*row)
        return table


def _is_terminal(stream: IO[str]) -> bool:
    """What rich's Console.is_terminal says for `stream` (TTY_COMPATIBLE, FORCE_COLOR, isatty)."""
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible in ("0", "1"):
        return tty_compatible == "1"
    force_color = os.environ.get("FORCE_COLOR")
    if force_color is not None:
        return force_color != ""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Console:
    """Prints to standard output (or error): through rich on a terminal, else plain."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr
        self._rich: rich.console.Console | None = None

    @property
    def file(self) -> IO[str]:
        return sys.stderr if self.stderr else sys.stdout  # looked up at each print: tests swap them

    @property
    def is_terminal(self) -> bool:
        return _is_terminal(self.file)

    def rich(self) -> rich.console.Console:
        """rich's console for this stream (what rich.progress needs), made on first use."""
        if self._rich is None:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(stderr=self.stderr, highlight=False)
        return self._rich

    def print(
        self,
        text: str | Table = "",
        *,
        markup: bool = True,
        style: str | None = None,
        soft_wrap: bool = False,
        highlight: bool = False,
    ) -> None:
        if self.is_terminal:
            shown = text.rich() if isinstance(text, Table) else text
            self.rich().print(shown, markup=markup, style=style, soft_wrap=soft_wrap, highlight=highlight)
            return
        lines = text.lines() if isinstance(text, Table) else [plain(text) if markup else text]
        self.file.write("".join(line + "\n" for line in lines))
        self.file.flush()


console = Console()
err_console = Console(stderr=True)


def report(error: OrchError) -> None:
    """Say `error` on stderr: its message, then its fix."""
    err_console.print(f"[red]✗[/red] {escape(error.message)}", soft_wrap=True)
    if error.fix:
        err_console.print(f"  {error.fix}", markup=False, soft_wrap=True)


def fail(error: OrchError) -> NoReturn:
    report(error)
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
        interrupt.inside_command()  # Ctrl-C is the command's to handle: KeyboardInterrupt
        try:
            with errors_to_exit():
                return fn(*args, **kwargs)
        finally:
            interrupt.after_command()  # no traceback at the interpreter's exit

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def ok(text: str) -> None:
    console.print(f"[green]✓[/green] {text}", soft_wrap=True)


def warn(text: str) -> None:
    console.print(f"[yellow]![/yellow] {text}", soft_wrap=True)
