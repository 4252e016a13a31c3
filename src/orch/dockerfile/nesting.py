"""A cheap refusal of ${...} nested so deep that BuildKit's parser would take minutes over it.

The parser's shell lexer (run on every RUN, COPY and ADD line to look for heredocs) takes time
that grows faster than the cube of the nesting depth: 400 levels took 0.5 s, 1,600 took 10 s.
Nobody nests ${...} more than a few levels, so a depth far beyond that is refused at once, at
its line, instead of running into the parse time limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from orch.dockerfile.findings import Finding, error
from orch.dockerfile.spans import Span

MAX_NESTING = 64
_BRACES = re.compile(r"\$\{|\}")


def too_deep(walked: Sequence[Span]) -> Finding | None:
    """The finding for the first instruction that nests ${...} more than MAX_NESTING deep."""
    for span in walked:
        if "${" not in span.joined:
            continue
        depth = deepest = 0
        for match in _BRACES.finditer(span.joined):
            depth = depth + 1 if match[0] == "${" else max(0, depth - 1)
            deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            keyword = span.keyword.upper()[:40]
            return error(
                span.start,
                keyword,
                f"This {keyword} nests ${{...}} {deepest} levels deep, more than the {MAX_NESTING} "
                "allowed: BuildKit's parser slows down sharply with each level.",
                f"Nest ${{...}} at most {MAX_NESTING} levels deep.",
            )
    return None
