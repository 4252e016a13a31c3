"""Hypothesis strategies for Dockerfile-shaped text."""

from __future__ import annotations

from hypothesis import strategies as st

_KEYWORDS = [
    "FROM e2bdev/code-interpreter:latest",
    "FROM",
    "FROM python:3",
    "RUN",
    "run",
    "RUN",
    "ENV",
    "ENV",
    "ARG",
    "LABEL",
    "WORKDIR",
    "USER",
    "SHELL",
    'SHELL ["/bin/bash", "-c"]',
    "CMD",
    "COPY",
    "ADD",
    "EXPOSE",
    "ONBUILD",
    "HEALTHCHECK",
    "MAINTAINER",
    "requests",
    "# comment",
    "# escape=`",
    "# escape=\\",
    "# syntax=docker/dockerfile:1",
    # Issue 10: flags with characters whose UTF-8 holds 0x85/0xA0 bytes, global ARGs.
    "RUN --mount=type=cache,target=/root/堀",
    "RUN --mount=type=cache,target=/data/你好",
    "COPY --chown=à",
    "HEALTHCHECK --interval=5秒 CMD",
    "FROM --platform=linux/充 e2bdev/code-interpreter:latest",
    "ONBUILD RUN --mount=type=cache,target=/你",
    "ARG BASE=e2bdev/code-interpreter:latest",
    "FROM ${BASE}",
    "ARG",
    "",
    "EOF",
    "\t",
    " ",
]
_WORDS = [
    "pip",
    "install",
    "numpy",
    "a=b",
    "A=1",
    "K=",
    "=v",
    '"x y"',
    "'q z'",
    "\\",
    "\\\\",
    "`",
    "$HOME",
    "${X:-y z}",
    "${X",
    "<<EOF",
    "<<-EOF",
    '<<"EOF"',
    "<<'EOF'",
    "3<<EOF",
    "cat",
    ">",
    "f",
    "EOF",
    "&&",
    "#",
    "#!/bin/sh",
    "[",
    "]",
    '"',
    "'",
    "=",
    "--mount=type=cache,target=/x",
    "--mount=type=bind,target=/x",
    "--network=host",
    "\t",
    "é",
    "\\$",
    "{",
    "}",
    '["a", "b"]',
    '["a", 1]',
    "AS",
    "x",
    "\u2028",
    "\x0b",
    "--mount=type=cache,target=/root/堀",
    "--mount=target=/data/你好",
    "--x=à",
    "堀",
    "a\rb",
    "\r",
    "${a:-${b:-${c:-x}}}",
    "${a#x}",  # a modifier the parser's lexer fails on: the line opens no heredoc
    "${a:-${a%x}}",
    "${BASE}",
    "A=${BASE:-x}",
    "<<",
    "'EOF'",
]
# Nesting around and beyond what the parser is allowed (nesting.MAX_NESTING = 64).
_NESTED = st.sampled_from([2, 63, 64, 65, 1_600]).flatmap(
    lambda depth: st.sampled_from(["${a:-" * depth + "x" + "}" * depth, "[" * depth * 10])
)
_ENDINGS = ["", "", "", " \\", "\\", "`", "\r", "  "]


def _line(keyword: str, words: list[str], ending: str) -> str:
    return (keyword + " " + " ".join(words)).rstrip(" ") + ending if words else keyword + ending


LINES = st.builds(
    _line,
    st.sampled_from(_KEYWORDS),
    st.lists(st.sampled_from(_WORDS), max_size=6),
    st.sampled_from(_ENDINGS),
)
# A lone CR is no line break to BuildKit: joined with it, lines make one long line.
NEWLINES = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r"])


@st.composite
def dockerfile_texts(draw: st.DrawFn) -> str:
    """Texts made of Dockerfile fragments: often valid, often subtly not."""
    lines = draw(st.lists(LINES, max_size=14))
    if lines and draw(st.integers(0, 9)) == 0:  # now and then, one deeply nested word
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] += " " + draw(_NESTED)
    newline = draw(NEWLINES)
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    if draw(st.booleans()):
        text = "FROM e2bdev/code-interpreter:latest" + newline + text
    if draw(st.booleans()):
        text = draw(st.sampled_from(["# escape=`\n", "\ufeff", "# syntax=x\n"])) + text
    return text


ANY_TEXT = st.one_of(
    st.text(),
    st.text(st.characters(codec=None, exclude_categories=())),
    st.lists(st.one_of(st.text(max_size=20), st.sampled_from(["\ud800", "\udfff", "\x00", "\r", "\n"]))).map(
        "".join
    ),
)
