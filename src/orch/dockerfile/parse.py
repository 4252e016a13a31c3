"""Run BuildKit's parser (the `dockerfile` package) safely and turn its output into Instructions."""

from __future__ import annotations

from dataclasses import dataclass

import dockerfile

from orch.dockerfile.directives import Directives, read_directives
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.lines import split_lines
from orch.dockerfile.spans import Span, spans
from orch.dockerfile.words import rewrite

MAX_LINE_BYTES = 65535  # the parser's bufio.Scanner limit (checked: 65536 bytes fail)
_FIXES = (
    ("unterminated heredoc", "End the heredoc with a line that holds only its delimiter word (e.g. EOF)."),
    (
        "must have two arguments",
        'Write NAME=value pairs, quoting values with spaces: ENV GREETING="hi there".',
    ),
    ("can't find =", 'Write NAME=value pairs, quoting values with spaces: ENV GREETING="hi there".'),
    ("JSON array", 'Write every element of the JSON array as a quoted string: ["pip", "install", "numpy"].'),
)


@dataclass(frozen=True)
class Parsed:
    """The parser's instructions (in file order, nothing dropped) or why there are none."""

    instructions: tuple[Instruction, ...]
    directives: Directives
    failure: Finding | None


def parse(text: str) -> Parsed:
    """Parse a Dockerfile; CRLF line ends are read as LF, heredoc bodies included."""
    text = text.replace("\r\n", "\n")
    lines = split_lines(text)
    directives = read_directives(lines)
    unsafe = _unsafe(text)
    if unsafe is not None:
        return Parsed((), directives, unsafe)
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        return Parsed((), directives, _failure(str(exc), lines, directives))
    return Parsed(tuple(_instruction(c, directives.escape) for c in commands), directives, None)


def _unsafe(text: str) -> Finding | None:
    """Text the parser must not see: it crashes on lone surrogates and truncates at NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        return error(
            line, "", "This line holds bytes that are not valid UTF-8 text.", "Save the file as UTF-8."
        )
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        return error(
            line,
            "",
            "This line holds a NUL character, so the file looks like binary data, not a Dockerfile.",
            "Save the Dockerfile as plain UTF-8 text.",
        )
    return None


def _failure(message: str, lines: list[str], directives: Directives) -> Finding:
    """A finding for a parser error, placed on the best line that can be found."""
    if message == "file with no instructions":
        return error(
            1,
            "",
            "The Dockerfile has no instructions: it is empty or holds only comments.",
            "Start it with FROM e2bdev/code-interpreter:latest and add RUN steps after it.",
        )
    if message.startswith("dockerfile line greater than"):
        long = (n for n, line in enumerate(lines, start=1) if len(line.encode()) > MAX_LINE_BYTES)
        return error(
            next(long, 1),
            "",
            f"This line is longer than the parser's limit of {MAX_LINE_BYTES} bytes.",
            "Split it over several lines, ending each but the last with a backslash (\\).",
        )
    if directives.bad_line is not None:
        return error(
            directives.bad_line,
            "",
            f"This parser directive is invalid: {message}.",
            "Use at most one `# escape=` line (with \\ or `) and at most one `# syntax=` line.",
        )
    span = _failing_span(message, lines, directives)
    line, keyword = (span.start, span.keyword.upper()) if span else (1, "")
    fix = next((f for needle, f in _FIXES if needle in message), "Fix the syntax on this line.")
    what = f"This {keyword} instruction" if keyword else "The Dockerfile"
    return error(line, keyword, f"{what} can't be parsed: {message}.", fix)


def _failing_span(message: str, lines: list[str], directives: Directives) -> Span | None:
    """The first instruction the parser rejects when it is given that instruction alone."""
    header = lines[: directives.found[-1].line] if directives.found else []
    for span in spans(lines, directives.escape):
        if message == "unterminated heredoc":
            if span.unterminated:
                return span
            continue
        try:
            dockerfile.parse_string("\n".join(header + lines[span.start - 1 : span.end]))
        except dockerfile.GoParseError:
            return span
    return None


def _instruction(command: dockerfile.Command, escape: str) -> Instruction:
    # The binding returns None for empty Go strings: a lone continuation at the end of the
    # file makes an instruction with no keyword at all.
    keyword = (command.cmd or "").upper()
    args = tuple(v or "" for v in command.value)
    if not command.json and keyword in ("ENV", "LABEL"):
        args = _pairs(command, escape)
    elif not command.json and keyword == "ARG":
        args = tuple(rewrite(w, escape, escape_blanks=True).text for w in args)
    elif not command.json and keyword in ("WORKDIR", "USER"):
        args = tuple(rewrite(w, escape).text for w in args)
    return Instruction(
        line=command.start_line,
        end_line=command.end_line,
        keyword=keyword,
        flags=tuple(f or "" for f in command.flags),
        args=args,
        json_form=bool(command.json),
        heredocs=tuple((h.name or "", h.content or "") for h in command.heredocs),
        original=command.original or "",
    )


def _pairs(command: dockerfile.Command, escape: str) -> tuple[str, ...]:
    """ENV/LABEL key, value words; a legacy `ENV KEY a b` value becomes the word `a\\ b`."""
    out: list[str] = []
    values = [v or "" for v in command.value]
    for key, value in zip(values[::2], values[1::2], strict=False):
        out += [
            rewrite(key, escape, escape_blanks=True).text,
            rewrite(value, escape, escape_blanks=True).text,
        ]
    return tuple(out)
