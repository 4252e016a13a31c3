"""The instruction walk used to place parser errors agrees with the parser itself."""

from __future__ import annotations

import sys

import dockerfile
from hypothesis import given, settings

from orch.dockerfile.directives import read_directives
from orch.dockerfile.lines import GO_SPACE, split_lines
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
    "# escape=`\nRUN <<\\\nFROM x\n",  # `<<\` names no heredoc: the escape leaves an empty word
    'COPY --mount=target=/data/你好 ["a"] <<EOF\nEOF\n',  # the parser cuts 你 in two: not JSON to it
    "ONBUILD --x RUN <<EOF\nx\nEOF\n",
]


def compare(text: str) -> None:
    text = text.replace("\r\n", "\n")
    try:
        commands = dockerfile.parse_string(text)
    except (dockerfile.GoParseError, UnicodeDecodeError):
        return
    lines = split_lines(text)
    walked = list(spans(lines, read_directives(lines).escape))
    assert [(s.start, s.end) for s in walked] == [(c.start_line, c.end_line) for c in commands]
    # What compaction relies on: the walk builds the parser's line and heredoc bodies.
    for span, c in zip(walked, commands, strict=True):
        assert span.joined == (c.original or "").partition("\n")[0]
        bodies = ["".join(line + "\n" for line in lines[b.first : b.stop]) for b in span.bodies]
        if c.cmd != "ONBUILD":  # the binding leaves out ONBUILD's heredocs (it consumes them)
            assert bodies == [h.content or "" for h in c.heredocs]


def test_corpus() -> None:
    for text in CORPUS:
        compare(text)


@settings(max_examples=400, deadline=None)
@given(dockerfile_texts())
def test_generated(text: str) -> None:
    compare(text)


def test_go_space_is_what_python_calls_space_but_the_ascii_separators() -> None:
    python = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(GO_SPACE) == python - set("\x1c\x1d\x1e\x1f")
