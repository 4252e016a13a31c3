"""Run BuildKit's parser (the `dockerfile` package) safely and turn its output into Instructions.

Safely means: text it would crash on or cut short is refused first, large instructions are
handed to it in a form it parses without its quadratic slowdown (compact.py), flags it would
garble are found before it sees them (builder_flags.py), and ${...} nested deep enough to keep
it busy for seconds is refused at once (nesting.py). The time limit on the whole is bounded.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dockerfile

from orch.dockerfile.builder_flags import GarbledFlag, garbled_flag
from orch.dockerfile.compact import Plan, as_written, compact
from orch.dockerfile.directives import Directives, read_directives
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.lines import split_lines
from orch.dockerfile.nesting import too_deep
from orch.dockerfile.spaced_heredoc import SpacedHeredoc, spaced_heredocs
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
    """The parser's instructions (in file order, nothing dropped) or why there are none.

    `garbled` holds, by first line, the instructions with a flag the parser would garble (they
    were parsed without their flag values); `spaced` the heredocs written with a space.
    """

    instructions: tuple[Instruction, ...]
    directives: Directives
    failure: Finding | None
    garbled: dict[int, GarbledFlag]
    spaced: tuple[SpacedHeredoc, ...]


def parse(text: str) -> Parsed:
    """Parse a Dockerfile; CRLF line ends are read as LF, heredoc bodies included."""
    text = text.replace("\r\n", "\n")
    lines = split_lines(text)
    directives = read_directives(lines)
    unsafe = _unsafe(text)
    if unsafe is not None:
        return Parsed((), directives, unsafe, {}, ())
    walked = tuple(spans(lines, directives.escape))
    spaced = tuple(spaced_heredocs(lines, walked))
    deep = too_deep(walked)
    if deep is not None:
        return Parsed((), directives, deep, {}, spaced)
    garbled = {s.start: g for s in walked if (g := garbled_flag(s.joined, s.markers)) is not None}
    if any(len(line.encode()) > MAX_LINE_BYTES for line in lines):
        plan = as_written(text, lines, walked)  # the parser must see the line it refuses
    else:
        plan = compact(text, lines, walked, directives.escape, {k: g.stand_in for k, g in garbled.items()})
    outcome = _run(plan, lines, walked, directives)
    if outcome is None and plan.restore:
        # The walk and the parser disagree about a compacted instruction: parse the text as written.
        outcome = _run(as_written(text, lines, walked), lines, walked, directives)
    if isinstance(outcome, Finding):
        return Parsed((), directives, outcome, garbled, spaced)
    if outcome is None:
        outcome = error(
            1,
            "",
            "BuildKit's parser read this Dockerfile differently from orch.",
            "Please report this Dockerfile as a bug.",
        )
        return Parsed((), directives, outcome, garbled, spaced)
    return Parsed(outcome, directives, None, garbled, spaced)


def _run(
    plan: Plan, lines: list[str], walked: Sequence[Span], directives: Directives
) -> tuple[Instruction, ...] | Finding | None:
    """The instructions, a finding, or None when the result can't be mapped back."""
    try:
        commands = dockerfile.parse_string(plan.text)
    except dockerfile.GoParseError as exc:
        return _failure(str(exc), lines, plan, walked, directives)
    except UnicodeDecodeError:
        # The binding's answer to a flag cut inside a character, which builder_flags.py should
        # have found first.
        return error(
            1,
            "",
            "BuildKit's parser garbled a non-ASCII character in a flag (a word that starts with --).",
            "Use only ASCII characters in flags.",
        )
    return _instructions(commands, plan, lines, walked, directives.escape)


def _instructions(
    commands: tuple[Any, ...], plan: Plan, lines: list[str], walked: Sequence[Span], escape: str
) -> tuple[Instruction, ...] | None:
    by_start = {s.start: s for s in walked}
    out = []
    for command in commands:
        ins = _instruction(command, escape, plan)
        if ins.line in plan.restore:
            span = by_start.get(ins.line)
            # The binding leaves out ONBUILD's heredocs (the parser still consumes them).
            if span is None or (len(span.bodies) != len(ins.heredocs) and ins.keyword != "ONBUILD"):
                return None
            ins = _with_bodies(ins, span, lines)
        out.append(ins)
    return tuple(out)


def _with_bodies(ins: Instruction, span: Span, lines: list[str]) -> Instruction:
    """An instruction handed over without its heredoc bodies, with them put back."""
    if not ins.heredocs or len(ins.heredocs) != len(span.bodies):
        return ins
    heredocs = tuple(
        (name, "".join(line + "\n" for line in lines[body.first : body.stop]))
        for (name, _), body in zip(ins.heredocs, span.bodies, strict=True)
    )
    # As the binding writes it: the instruction's line, then each body and its delimiter.
    original = ins.original.partition("\n")[0] + "\n" + "".join(b + name + "\n" for name, b in heredocs)
    return Instruction(
        ins.line, ins.end_line, ins.keyword, ins.flags, ins.args, ins.json_form, heredocs, original
    )


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


def _failure(
    message: str,
    lines: list[str],
    plan: Plan,
    walked: Sequence[Span],
    directives: Directives,
) -> Finding:
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
    span = _failing_span(message, lines, plan, walked, directives)
    line, keyword = (span.start, span.keyword.upper()) if span else (1, "")
    fix = next((f for needle, f in _FIXES if needle in message), "Fix the syntax on this line.")
    what = f"This {keyword} instruction" if keyword else "The Dockerfile"
    return error(line, keyword, f"{what} can't be parsed: {message}.", fix)


def _failing_span(
    message: str, lines: list[str], plan: Plan, walked: Sequence[Span], directives: Directives
) -> Span | None:
    """The first instruction the parser rejects when it is given that instruction alone."""
    if message == "unterminated heredoc":
        return next((s for s in walked if s.unterminated), None)
    header = "".join(line + "\n" for line in lines[: directives.found[-1].line]) if directives.found else ""
    for span, alone in zip(walked, plan.instructions, strict=True):
        try:
            dockerfile.parse_string(header + alone)
        except (dockerfile.GoParseError, UnicodeDecodeError):
            return span
    return None


def _instruction(c: Any, escape: str, plan: Plan) -> Instruction:
    # The binding returns None for empty Go strings: a lone continuation at the end of the
    # file makes an instruction with no keyword at all.
    keyword = (c.cmd or "").upper()
    args = tuple(v or "" for v in c.value)
    if not c.json and keyword in ("ENV", "LABEL"):
        args = _pairs(args, escape)
    elif not c.json and keyword == "ARG":
        args = tuple(rewrite(w, escape, escape_blanks=True).text for w in args)
    elif not c.json and keyword in ("WORKDIR", "USER"):
        args = tuple(rewrite(w, escape).text for w in args)
    return Instruction(
        line=plan.starts[c.start_line - 1],
        end_line=plan.ends[c.end_line - 1],
        keyword=keyword,
        flags=tuple(f or "" for f in c.flags),
        args=args,
        json_form=bool(c.json),
        heredocs=tuple((h.name or "", h.content or "") for h in c.heredocs),
        original=c.original or "",
    )


def _pairs(values: tuple[str, ...], escape: str) -> tuple[str, ...]:
    """ENV/LABEL key, value words; a legacy `ENV KEY a b` value becomes the word `a\\ b`."""
    out: list[str] = []
    for key, value in zip(values[::2], values[1::2], strict=False):
        out += [
            rewrite(key, escape, escape_blanks=True).text,
            rewrite(value, escape, escape_blanks=True).text,
        ]
    return tuple(out)
