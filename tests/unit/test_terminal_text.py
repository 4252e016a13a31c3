"""What a sandbox wrote, shown on a terminal (cli/terminal_text.py): styles pass, other control
characters are shown, a style left on is reset; piped, it passes as it came."""

from __future__ import annotations

import io

import pytest

from orch.cli.terminal_text import TerminalText
from orch.cli.terminal_text import shown as shown_line


def shown(*chunks: str, terminal: bool = True) -> str:
    out = io.StringIO()
    text = TerminalText(out, terminal)
    for chunk in chunks:
        text.write(chunk)
    text.end()
    return out.getvalue()


@pytest.mark.parametrize(
    ("written", "seen"),
    [
        ("plain\ttext\r\n", "plain\ttext\r\n"),  # tabs, carriage returns, newlines pass
        ("\x1b[1;31mred\x1b[m", "\x1b[1;31mred\x1b[m\x1b[0m"),  # styles pass, then a reset
        ("\x1b]0;title\x07", "^[]0;title^G"),  # the window's title
        ("\x1b]52;c;aGk=\x07", "^[]52;c;aGk=^G"),  # the clipboard
        ("\x1b[2J\x1b[H\x1b[1A", "^[[2J^[[H^[[1A"),  # clear, home, up
        ("\x00\x08\x7f", "^@^H^?"),
        ("\x9b2J", "\\x9b2J"),  # C1's CSI
        ("é ✓", "é ✓"),
    ],
)
def test_a_terminal_is_shown_the_controls_and_obeys_the_styles(written: str, seen: str) -> None:
    assert shown(written) == seen


def test_a_style_split_across_chunks_passes_whole() -> None:
    assert shown("a\x1b", "[3", "2mgreen") == "a\x1b[32mgreen\x1b[0m"
    assert shown("a\x1b[3") == "a^[[3"  # never completed: shown at the end


def test_piped_text_passes_as_it_came() -> None:
    written = "\x1b]0;title\x07\x1b[8mhidden\x1b"
    assert shown(written, terminal=False) == written


def test_a_line_the_cli_prints_is_shown_whole_as_the_stream_would_be() -> None:
    """A managed loop's transcript lines (the model's text, a tool's name and output) are
    printed by the CLI itself: made safe as a stream is, a style left on reset at the end."""
    assert shown_line("\x1b[2Jclear \x1b]0;t\x07 \x1b[31mred") == "^[[2Jclear ^[]0;t^G \x1b[31mred\x1b[0m"
    assert shown_line("ends in \x1b[3") == "ends in ^[[3"
    assert shown_line("plain [bold]") == "plain [bold]"
