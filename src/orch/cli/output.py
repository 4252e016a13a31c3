"""Console output and the one place where errors become exit codes.

The commands write rich's markup ("[green]✓[/green]", `escape(user_text)`) and tables from
`Table`. On a terminal that goes through rich (colours, the terminal's width). Anything else (a
pipe, a file, `--json` beside it, a test runner) gets plain text: the markup taken out, every line
whole (as kubectl and podman print them), and rich never imported, which a quick command's start
would otherwise pay for (tests/unit/test_cli_start.py keeps it out).
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal, NoReturn

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
    """A table in the CLI's one style: no borders, bold headers, flush left.

    Piped, every cell is printed whole. On a terminal the table fits its width, and what gives
    way is said per column: a key column (the default: ids, names, statuses, versions, counts,
    what the next command takes) is never cut; a descriptive one (`key=False`: a description, an
    environment, a URL, a time) is cut with …, or wrapped if added with `no_wrap=False`. When even
    the key columns don't fit, the rows are wider than the terminal (it wraps them), as kubectl's
    and podman's are, rather than an id cut (docs/cli.md)."""

    def __init__(self) -> None:
        self.columns: list[_Column] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(
        self,
        header: str,
        *,
        key: bool = True,
        no_wrap: bool = True,
        justify: Literal["left", "right"] = "left",
        min_width: int = 0,
    ) -> None:
        self.columns.append(_Column(header, key, no_wrap, justify, min_width))

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def _grid(self) -> list[list[str]]:
        return [
            [plain(c.header) for c in self.columns],
            *([plain(cell) for cell in row] for row in self.rows),
        ]

    def _natural(self, grid: list[list[str]]) -> list[int]:
        """Each column's width with every cell whole."""
        return [
            max([_width(line[i]) for line in grid] + [column.min_width])
            for i, column in enumerate(self.columns)
        ]

    def lines(self) -> list[str]:
        grid = self._grid()
        widths = self._natural(grid)
        return [
            "  ".join(_pad(cell, width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in grid
        ]

    def widths(self, room: int) -> list[int]:
        """Each column's width on a terminal `room` columns wide. The key columns are whole; the
        descriptive ones share what is left, the widest cut first (each down to a common width,
        so a short one, a time say, stays whole while a long one gives way), none narrower than
        its header. Below that the table is wider than `room`: a cut header, or a cell cut to a
        letter or two, would say nothing."""
        natural = self._natural(self._grid())
        giving = [i for i, column in enumerate(self.columns) if not column.key]
        left = room - 2 * (len(natural) - 1) - sum(w for i, w in enumerate(natural) if i not in giving)
        if not giving or sum(natural[i] for i in giving) <= left:
            return natural
        floors = {i: min(natural[i], _width(plain(self.columns[i].header))) for i in giving}
        fitted = dict(floors)
        for level in range(max(natural[i] for i in giving), 0, -1):
            fitted = {i: min(natural[i], max(floors[i], level)) for i in giving}
            if sum(fitted.values()) <= left:
                break
        # What the common width leaves over (less than a column each) goes to the widest cut.
        for i in sorted((i for i in giving if fitted[i] < natural[i]), key=lambda i: -natural[i]):
            if sum(fitted.values()) >= left:
                break
            fitted[i] += 1
        return [fitted.get(i, w) for i, w in enumerate(natural)]

    def rich(self, room: int) -> Any:
        """The table for rich, on a terminal `room` columns wide: every column's width fixed by
        `widths`, and the table as wide as they make it, so rich cuts no key column to fit
        (its own fitting cuts every column alike, headers too, and drops the last ones)."""
        from rich.table import Table as RichTable

        widths = self.widths(room)
        table = RichTable(
            box=None, header_style="bold", pad_edge=False, width=sum(widths) + 2 * (len(widths) - 1)
        )
        for column, width in zip(self.columns, widths, strict=True):
            wrap = not column.key and not column.no_wrap
            table.add_column(
                column.header,
                width=width,
                no_wrap=not wrap,
                overflow="fold" if wrap else "ellipsis",
                justify=column.justify,
            )
        for row in self.rows:
            table.add_row(*row)
        return table


@dataclass(frozen=True)
class _Column:
    header: str
    key: bool  # never cut on a terminal (see Table)
    no_wrap: bool  # a descriptive column's: cut with … rather than wrapped
    justify: Literal["left", "right"]
    min_width: int


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

            # No emoji codes: `:smile:` in a name or an output is shown as written.
            options: dict[str, Any] = {"stderr": self.stderr, "highlight": False, "emoji": False}
            self._rich = RichConsole(**options)
            if self._rich.width <= 0:  # rich takes COLUMNS=0 as a width of 0, and printed nothing
                import shutil  # which reads 0 as unset, and asks the terminal

                self._rich = RichConsole(**options, width=shutil.get_terminal_size().columns)
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
            console = self.rich()
            shown = text.rich(console.width) if isinstance(text, Table) else text
            # A table's rows wider than the terminal (its key columns alone are) go out whole.
            crop = not isinstance(text, Table)
            console.print(
                shown, markup=markup, style=style, soft_wrap=soft_wrap, highlight=highlight, crop=crop
            )
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


# What a shell shows for a program that wrote to a closed pipe (128 + SIGPIPE): `orch … | head -1`.
PIPE_CLOSED = 141


def _to_null(stream: IO[str]) -> None:
    """Point the file descriptor under `stream` at /dev/null, should its pipe be closed, so that
    what it still holds is dropped at the interpreter's exit rather than said as an "Exception
    ignored … BrokenPipeError" (exit 120). A stream without one (a test's) is left as it is."""
    try:
        stream.flush()
        return
    except OSError:
        pass
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class _WholeWrites(io.RawIOBase):
    """An unbuffered standard stream's file, each write whole or an error. Unbuffered
    (PYTHONUNBUFFERED, `python -u`: common in containers), Python's text stream writes straight
    to its file and ignores how much a write took: a closed pipe takes part of a large write
    (`orch runs logs RUN | head -1`), and the rest was lost without an error, so the command went
    on and ended 0. Here the rest is written again, and a closed pipe raises BrokenPipeError."""

    def __init__(self, file: io.FileIO) -> None:
        self.file = file  # the interpreter's standard stream's: closing this one leaves it open

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.file.fileno()

    def isatty(self) -> bool:
        return self.file.isatty()

    @property
    def name(self) -> Any:
        return self.file.name

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            took = self.file.write(view[done:])
            if took is None:  # a non-blocking file that is full: wait until it takes more
                select.select([], [self.file], [])
                continue
            done += took
        return done


def _whole(stream: IO[str]) -> IO[str]:
    """`stream` (sys.stdout, sys.stderr) writing whole (`_WholeWrites`) if it is unbuffered; as
    it is otherwise: a buffered stream writes the rest of a partial write itself, and a test's
    stream has no file."""
    file = getattr(stream, "buffer", None)
    if type(file) is not io.FileIO or not isinstance(stream, io.TextIOWrapper):
        return stream
    return io.TextIOWrapper(
        _WholeWrites(file),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=stream.line_buffering,
        write_through=True,
    )


def pipe_closed() -> NoReturn:
    """Standard output (or error) was closed while the command wrote to it: the reader took
    what it wanted (`orch … | head -1`). Nothing more is said, as a Unix tool says nothing:
    exit 141, as a shell shows such a tool's end (docs/cli.md)."""
    for stream in (sys.stdout, sys.stderr):
        _to_null(stream)
    raise typer.Exit(PIPE_CLOSED)


def fail(error: OrchError) -> NoReturn:
    report(error)
    raise typer.Exit(error.exit_code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn orch's errors into a plain message and the right exit code, Ctrl-C into 130 and a
    closed standard output into 141 (`pipe_closed`); nothing else is caught."""
    try:
        yield
    except OrchError as e:
        fail(e)
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        raise typer.Exit(130) from None
    except BrokenPipeError:
        pipe_closed()


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a Typer command so domain errors exit cleanly."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        interrupt.inside_command()  # Ctrl-C is the command's to handle: KeyboardInterrupt
        sys.stdout, sys.stderr = _whole(sys.stdout), _whole(sys.stderr)  # a closed pipe raises
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
