"""Validation under a time limit, in worker processes, so that it never stalls the server.

BuildKit's parser is Go code called through the `dockerfile` binding, which holds the GIL until
it returns, and some texts keep it busy for a long time: a 250,000-character word took 30 s,
${...} nested 1,600 deep 10 s. Run in the server's process, one such request stalled every
other request for as long. So validation runs in a small pool of worker processes: waiting
for one releases the GIL, and one still busy after TIME_LIMIT is killed and the file reported
as too slow to parse. A Dockerfile of real shape up to the server's 256 KiB limit takes a
fraction of that. Where no worker process can be started, validation runs here, unbounded.
"""

from __future__ import annotations

import itertools
import re

from orch.dockerfile import worker, worker_pool
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.validate import Validation, check

TIME_LIMIT = 1.5  # seconds; with the exchange, a request is answered within 2 s
MAX_TEXT = 256 * 1024  # characters: a Dockerfile longer than this is refused, wherever it comes from


def validate(text: str) -> Validation:
    """Check a Dockerfile's text (see validate.check) within TIME_LIMIT; never raises, whatever the text."""
    if len(text) > MAX_TEXT:  # the same verdict from the CLI, the API and a bundle's Dockerfile
        return Validation((_too_long(text),), ())
    answer = worker_pool.run({"text": text}, TIME_LIMIT)
    if answer is None:
        return check(text)
    if isinstance(answer, worker_pool.Stopped):
        return Validation((_stopped(answer, text),), ())
    if "bug" in answer:
        raise RuntimeError(f"Checking the Dockerfile failed: {answer['bug']}")
    return worker.from_wire(answer)


def _too_long(text: str) -> Finding:
    return error(
        1,
        "",
        f"The Dockerfile has {len(text):,} characters, more than the limit of {MAX_TEXT:,} (256 KiB).",
        "Download large data in a RUN step, or move long scripts into files the build fetches, "
        "instead of writing them into the Dockerfile.",
    )


def _stopped(stopped: worker_pool.Stopped, text: str) -> Finding:
    if not stopped.timed_out:
        return error(
            1,
            "",
            f"BuildKit's parser crashed on this Dockerfile (exit code {stopped.exit_code}).",
            "Please report this Dockerfile as a bug.",
        )
    said = f"The Dockerfile was not checked because parsing it took more than {TIME_LIMIT:g} s"
    lines = text.split("\n")
    body = _bodies(lines, _escape(text)) if "<<" in text else set()
    count, words = _parser_load("\n".join(line for n, line in enumerate(lines) if n not in body))
    if count * WORD_PER_INSTRUCTION**2 + words < QUICK_LOAD:
        # Nothing in it is slow to parse (found by a tester: a RUN with a heredoc of 2,000
        # lines, its only instruction after FROM, was said to have 2,004 instructions).
        physical = len(lines) - (not lines[-1])
        return error(
            1,
            "",
            f"{said}, though it has only {count:,} instruction{'' if count == 1 else 's'} "
            f"({physical:,} line{'' if physical == 1 else 's'}), which BuildKit's parser reads in "
            "a fraction of that: the server was likely busy.",
            "Validate it again; if it keeps running out of time, please report this Dockerfile as a bug.",
        )
    if words <= count * WORD_PER_INSTRUCTION**2:
        # Tens of thousands of short instructions: no line of them is slower than another
        # (found by a tester: 30,000 `ENV A=1` lines were said to be slow on the FROM line).
        return error(
            1,
            "",
            f"{said}: it has {count:,} instructions, and BuildKit's parser takes a while on each.",
            "Use fewer instructions: set several variables in one ENV (ENV A=1 B=2), and join "
            "commands into one RUN with &&.",
        )
    # Long words and long lines are what the parser is slow on: point at the longest line.
    longest = max((n for n in range(len(lines)) if n not in body), key=lambda n: len(lines[n]))
    return error(
        longest + 1,
        "",
        f"{said}: BuildKit's parser is slow on very long words and instructions, such as on this "
        f"line ({len(lines[longest]):,} characters).",
        "Split long words and instructions, or download large data in a RUN step instead of "
        "writing it into the Dockerfile.",
    )


# The parser's time grows with the number of instructions, and with the square of each word's
# length (it grows a word one character at a time): an instruction takes it about as long as a
# word of this many characters (measured on v0.12: 30,000 `ENV A=1` lines 0.7 s, one word of
# 50,000 characters 0.6 s).
WORD_PER_INSTRUCTION = 300


# A load the parser takes a small part of TIME_LIMIT on (by the measures above, 0.1 s): a
# Dockerfile under it ran out of time on a busy machine, not on its own.
QUICK_LOAD = 5_000 * WORD_PER_INSTRUCTION**2


def _parser_load(text: str) -> tuple[int, int]:
    """(instructions, sum of the squares of the words' lengths) of `text` (without its heredoc
    bodies, see _bodies), roughly as the parser sees them: continuation lines joined, blank and
    comment lines left out. Cheap (string methods and one regex), as it runs in the server's
    process."""
    escape = re.escape(_escape(text))
    joined = re.sub(rf"(?<!{escape}){escape}[ \t]*\r?\n", "", text)
    count = len(_INSTRUCTION.findall(joined))
    return count, sum(len(word) ** 2 for word in joined.split())


def _escape(text: str) -> str:
    """The escape character, as an `# escape=` directive sets it (guessed, see _BACKTICK)."""
    head = text.split("\n", _DIRECTIVE_LINES)[:_DIRECTIVE_LINES]
    directives = itertools.takewhile(lambda line: line.startswith("#"), head)
    return "`" if any(_BACKTICK.match(line) for line in directives) else "\\"


def _bodies(lines: list[str], escape: str) -> set[int]:
    """The indexes of the lines in heredoc bodies, terminators included, found roughly as the
    parser finds them: after a RUN, COPY or ADD (continuation lines joined) with `<<NAME`
    markers, up to a line NAME. The parser counts none of them as instructions, nor, compacted
    (compact.py), reads their words. One pass over the lines."""
    found: set[int] = set()
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        i += 1
        if "<<" not in line and not _continued(line, escape):
            continue  # the common line: neither opens a heredoc nor runs on
        opens = _OPENS.match(line) is not None
        markers = _MARKER.findall(line) if opens else []
        while _continued(line, escape) and i < n:
            line = lines[i]
            i += 1
            if opens and "<<" in line:
                markers += _MARKER.findall(line)
        for chomp, _quote, name in markers:
            while i < n:
                found.add(i)
                end = lines[i].removesuffix("\r")
                i += 1
                if (end.lstrip("\t") if chomp else end) == name:
                    break
    return found


def _continued(line: str, escape: str) -> bool:
    """Whether the line runs on to the next (roughly: comment and blank lines between
    continuation lines, which the parser skips, end the instruction here)."""
    line = line.removesuffix("\r").rstrip(" \t")
    return line.endswith(escape) and line[-2:-1] != escape


# An instruction that can open heredocs; a heredoc's marker word, with its name (quoted or not).
_OPENS = re.compile(r"[ \t\ufeff]*(?:onbuild[ \t]+)?(?:run|copy|add)(?:[ \t]|\Z)", re.IGNORECASE)
_MARKER = re.compile(r"(?<!\S)\d*<<(-?)([\"']?)([^\s\"'<]+)\2")
# Where an instruction begins: a line's first character other than a blank, unless a comment's.
_INSTRUCTION = re.compile(r"^[ \t\ufeff]*[^\s#]", re.MULTILINE)
# An `# escape=` directive's backtick, guessed in a linear pattern: directives.read_directives
# would be exact, but its pattern takes seconds on a long first line, here in the server's process.
_BACKTICK = re.compile(r"#[\t\f\r ]*escape[\t\f\r ]*=[\t\f\r ]*`", re.IGNORECASE)
_DIRECTIVE_LINES = 16  # directives are the first lines, one a line: only a few of them
