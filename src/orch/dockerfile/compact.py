"""The text handed to BuildKit's parser: the user's lines, or fewer lines that parse the same.

The parser in the `dockerfile` package (BuildKit v0.12) appends to a string for every
continuation line and every heredoc body line, so its time grows with the square of an
instruction's size: 600 KB of continuation lines took 7.6 s, a 1 MB heredoc 20 s. An
instruction of many lines is therefore handed over as its joined line, cut into a few long
continuation lines, and without its heredoc bodies, which are put back from the span walk
afterwards (the terminator lines stay, so the parser still ends each heredoc where it ends).
An instruction whose flags the parser would garble is handed over as a stand-in (see
builder_flags.py). Line numbers are mapped back to the user's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orch.dockerfile.lines import is_go_space
from orch.dockerfile.spans import Span

# An instruction of more lines than this is handed over compacted.
COMPACT_LINES = 32
# Characters per continuation line: under the parser's 64 KiB line limit even in 4-byte characters.
_PIECE = 16_000


@dataclass(frozen=True)
class Plan:
    """What the parser reads, and how its line numbers map back to the user's."""

    text: str
    starts: tuple[int, ...]  # the user's line for each line of `text`, as an instruction's first
    ends: tuple[int, ...]  # ... and as an instruction's last
    restore: frozenset[int]  # first lines of the instructions handed over without their bodies
    instructions: tuple[str, ...]  # each instruction alone, as in `text` (for locating errors)


def as_written(text: str, lines: Sequence[str], walked: Sequence[Span]) -> Plan:
    """The user's own text, unchanged."""
    numbers = tuple(range(1, len(lines) + 1))
    alone = tuple("\n".join(lines[s.start - 1 : s.end]) for s in walked)
    return Plan(text, numbers, numbers, frozenset(), alone)


def compact(
    text: str, lines: Sequence[str], walked: Sequence[Span], escape: str, stand_ins: Mapping[int, str]
) -> Plan:
    """A plan that hands large instructions and `stand_ins` (by first line) over compacted."""
    if not stand_ins and all(s.end - s.start < COMPACT_LINES for s in walked):
        return as_written(text, lines, walked)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    alone: list[str] = []
    restore: set[int] = set()

    def keep(index: int) -> None:
        out.append(lines[index])
        starts.append(index + 1)
        ends.append(index + 1)

    done = 0
    for span in walked:
        for index in range(done, span.start - 1):
            keep(index)
        first = len(out)
        stand_in = stand_ins.get(span.start)
        big = span.end - span.start >= COMPACT_LINES
        pieces = None
        if stand_in is not None or big:
            pieces = _pieces(stand_in if stand_in is not None else span.joined, escape)
        if pieces is None:
            for index in range(span.start - 1, span.end):
                keep(index)
        else:
            restore.add(span.start)
            for n, piece in enumerate(pieces):
                # Every piece but the last continues; so does the last if the user's line did
                # (it runs into the end of the file).
                out.append(piece + escape if n < len(pieces) - 1 or span.continued else piece)
                starts.append(span.start)
                ends.append(span.logical_end)
            for body in span.bodies:
                if body.stop < len(lines):
                    keep(body.stop)  # the terminator
        alone.append("\n".join(out[first:]))
        done = span.end
    for index in range(done, len(lines)):
        keep(index)
    return Plan("\n".join(out) + "\n", tuple(starts), tuple(ends), frozenset(restore), tuple(alone))


def _pieces(line: str, escape: str) -> list[str] | None:
    """The joined line cut into continuation lines that the parser joins back to it; None if it can't be.

    A cut never falls after the escape character (the join would escape it) or before a blank
    or `#` (the parser drops a continuation line that is blank or looks like a comment).
    """
    if not line or is_go_space(line[0]) or line[0] == "#":
        return None  # the parser strips the first line's blanks, but they are part of its line
    pieces, start = [], 0
    while len(line) - start > _PIECE:
        cut = next(
            (
                c
                for c in range(start + _PIECE, start + _PIECE // 2, -1)
                if line[c - 1] != escape and not is_go_space(line[c]) and line[c] != "#"
            ),
            None,
        )
        if cut is None:
            return None
        pieces.append(line[start:cut])
        start = cut
    pieces.append(line[start:])
    return pieces
