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
]
_ENDINGS = ["", "", "", " \\", "\\", "`", "\r", "  "]


def _line(keyword: str, words: list[str], ending: str) -> str:
    return (keyword + " " + " ".join(words)).rstrip(" ") + ending if words else keyword + ending


LINES = st.builds(
    _line,
    st.sampled_from(_KEYWORDS),
    st.lists(st.sampled_from(_WORDS), max_size=6),
    st.sampled_from(_ENDINGS),
)
NEWLINES = st.sampled_from(["\n", "\n", "\r\n"])


@st.composite
def dockerfile_texts(draw: st.DrawFn) -> str:
    """Texts made of Dockerfile fragments: often valid, often subtly not."""
    lines = draw(st.lists(LINES, max_size=14))
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
