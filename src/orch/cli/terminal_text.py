"""What a sandbox wrote (a run's output, a sandbox command's, a service's log, a build's), and
what a model or a tool wrote in a managed loop's transcript, shown on a terminal. The text is
untrusted, and a terminal obeys the control sequences in it: an agent could set the window's
title, clear the screen, move the cursor up over the CLI's own lines, hide a link behind text or
write the clipboard (OSC 52). On a terminal, colours and styles (SGR: `ESC [ ... m`) pass, and
every other control character is shown, as `cat -v` does: `^[` for ESC, `^G` for BEL, `\\x9b`
for a C1 control; newlines, tabs and carriage returns (a progress bar's) pass. A style left on
is reset before the CLI writes again. Piped or redirected, the text passes as it came: a program
reading it gets exactly what the sandbox wrote."""

from __future__ import annotations

import io
import re
from typing import IO

# An SGR sequence whole, or one control character (ESC that starts no SGR among them).
_CONTROL = re.compile(r"\x1b\[[0-9;:]*m|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# The start of an SGR sequence at a chunk's end, completed by the next chunk.
_PARTIAL = re.compile(r"\x1b(\[[0-9;:]*)?\Z")
_RESET = "\x1b[0m"


def visible(char: str) -> str:
    code = ord(char)
    return f"^{chr(code ^ 0x40)}" if code < 0x20 or code == 0x7F else f"\\x{code:02x}"


class TerminalText:
    """Writes the chunks of one stream's text to `out`, made safe when `terminal`."""

    def __init__(self, out: IO[str], terminal: bool) -> None:
        self.out, self.terminal = out, terminal
        self.held = ""  # an SGR sequence begun at the end of the last chunk
        self.styled = False  # an SGR sequence passed since the last reset

    def write(self, text: str) -> None:
        if not self.terminal:
            self.out.write(text)
            return
        text, self.held = self.held + text, ""
        if partial := _PARTIAL.search(text):
            text, self.held = text[: partial.start()], text[partial.start() :]
        self.out.write(_CONTROL.sub(self._shown, text))

    def _shown(self, match: re.Match[str]) -> str:
        found = match.group()
        if len(found) > 1:  # an SGR sequence
            self.styled = True
            return found
        return visible(found)

    def end(self) -> None:
        """The text ended, or the CLI writes next: what was held is shown, styles reset."""
        if self.held:
            self.out.write("".join(visible(c) if _CONTROL.fullmatch(c) else c for c in self.held))
            self.held = ""
        if self.styled:
            self.out.write(_RESET)
            self.styled = False
        self.out.flush()


def shown(text: str, terminal: bool = True) -> str:
    """`text` whole as TerminalText writes it on a terminal: for a line of it the CLI prints
    itself (a managed loop's transcript: the model's text, a tool's name and output; a build's
    log lines, its failure excerpt, the Dockerfile step it is at), a style it leaves on reset at
    its end. Not on a `terminal` (piped, redirected: the console's `is_terminal`), as it came."""
    if not terminal:
        return text
    out = io.StringIO()
    written = TerminalText(out, terminal=True)
    written.write(text)
    written.end()
    return out.getvalue()
