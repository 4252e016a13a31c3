"""The instruction walk used to place parser errors agrees with the parser itself."""

from __future__ import annotations

import dockerfile
from hypothesis import given, settings

from orch.dockerfile.directives import read_directives
from orch.dockerfile.lines import split_lines
from orch.dockerfile.spans import spans
from tests.unit.dockerfile.strategies import dockerfile_texts

CORPUS = [
    "FROM x\nRUN <<EOF\na\nEOF\nRUN echo \\\n  # c\n  b\n\nENV A=1\n",
    '# escape=`\nFROM x\nRUN a `\n b\nRUN <<-EOF\n\tx\n\tEOF\nRUN ["a"] <<X\nY\n',
    "RUN <<A cat > /a && <<B cat > /b\naa\nA\nbb\nB\n",
    'RUN echo <<"E F"\nx\nE F\n',
    "\ufeffFROM x\n  RUN y \\\n\n z\n",
    "RUN a \\\\\nRUN b\n",
    "ONBUILD RUN <<EOF\nx\nEOF\nRUN y\n",
    "RUN echo <<EOF \\\n  && ls\nx\nEOF\n",
]


def compare(text: str) -> None:
    text = text.replace("\r\n", "\n")
    try:
        parsed = [(c.start_line, c.end_line) for c in dockerfile.parse_string(text)]
    except dockerfile.GoParseError:
        return
    lines = split_lines(text)
    walked = [(s.start, s.end) for s in spans(lines, read_directives(lines).escape)]
    assert walked == parsed


def test_corpus() -> None:
    for text in CORPUS:
        compare(text)


@settings(max_examples=400, deadline=None)
@given(dockerfile_texts())
def test_generated(text: str) -> None:
    compare(text)
