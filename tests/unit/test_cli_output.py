"""The CLI's consoles: rich on a terminal; plain text otherwise, the same text rich would show,
whole rows and no rich imported."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console as RichConsole
from rich.markup import escape as rich_escape
from rich.text import Text

from orch.cli import output

# Text that looks like markup: tags, closing tags, escapes, brackets and backslashes.
MARKUPISH = st.text(alphabet=st.sampled_from(list("[]/\\ab =#@:xé★")), max_size=30)
SAMPLES = [
    "plain",
    "[green]✓[/green] done",
    "[red]✗[/red] [bold]x[/]",
    r"\[not a tag]",
    r"\\[bold]tag after a backslash[/bold]",
    "a [link=https://x.org]link[/link]",
    "ends with a backslash\\",
    "[1] numbers are no tags",
]


@given(MARKUPISH)
def test_escape_is_richs(text: str) -> None:
    assert output.escape(text) == rich_escape(text)


@given(MARKUPISH)
def test_escaped_text_shows_as_rich_shows_it(text: str) -> None:
    """What the commands print: user text escaped, inside tags of their own."""
    for markup in (output.escape(text), f"[bold]{output.escape(text)}[/bold] [dim]x[/]"):
        assert output.plain(markup) == Text.from_markup(markup, emoji=False).plain


@pytest.mark.parametrize("markup", SAMPLES)
def test_plain_is_what_rich_shows(markup: str) -> None:
    assert output.plain(markup) == Text.from_markup(markup, emoji=False).plain


def _rich_lines(table: output.Table) -> list[str]:
    buffer = io.StringIO()
    RichConsole(file=buffer, width=10_000, color_system=None).print(table.rich(10_000))
    return [line.rstrip() for line in buffer.getvalue().splitlines()]


def test_plain_tables_are_richs_without_trailing_spaces() -> None:
    table = output.Table()
    table.add_column("ID")
    table.add_column("NAME", min_width=12)
    table.add_column("DESCRIPTION", key=False)
    table.add_row("env_1", "python ★", "[green]ready[/]")
    table.add_row("env_22", "日本語", output.escape("[not markup] " + "d" * 90))
    lines = table.lines()
    assert lines == _rich_lines(table)
    assert lines[2].endswith("[not markup] " + "d" * 90) and "…" not in "".join(lines)


def test_piped_output_is_plain_and_whole(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv("COLUMNS", "40")  # a terminal's width: never cuts piped output
    assert not output.console.is_terminal  # pytest's captured stdout is no terminal
    output.ok(output.escape("[x] " + "long " * 20))
    output.err_console.print("[red]✗[/red] failed", style="dim")
    out, err = capsys.readouterr()
    assert out == "✓ [x] " + "long " * 20 + "\n" and err == "✗ failed\n"


def test_a_terminal_gets_rich(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # as rich itself: a terminal, whatever the stream
    monkeypatch.setenv("COLUMNS", "80")
    console = output.Console()
    assert console.is_terminal
    console.print("[green]✓[/green] ok")
    assert "\x1b[32m✓\x1b[0m ok" in capsys.readouterr().out
    console.print(output.escape("agent :smile: v1"))  # a name is shown as written, not as 😄
    assert "agent :smile: v1" in capsys.readouterr().out
    monkeypatch.setenv("COLUMNS", "0")  # rich took it as a width of 0: nothing was printed
    zero = output.Console()
    zero.print("hello")
    assert "hello" in capsys.readouterr().out
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert not console.is_terminal
