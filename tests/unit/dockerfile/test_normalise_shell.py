"""Blank runs in RUN text count as one only while the shell in effect reads the text as sh does."""

from __future__ import annotations

import pytest

from orch.dockerfile import normalised, validate

from .support import BASE

PYTHON = 'SHELL ["/usr/bin/python3", "-c"]\n'


def key(text: str) -> str:
    v = validate(text)
    assert v.ok, v.findings
    return normalised(v.instructions)


def test_blanks_count_under_a_python_shell() -> None:
    wide = key(BASE + PYTHON + "RUN a   b\n")
    assert wide != key(BASE + PYTHON + "RUN a b\n")
    assert '["RUN", [], ["a   b"], false, []]' in wide.splitlines()


@pytest.mark.parametrize(
    "shell",
    [
        'SHELL ["/bin/sh", "-c", "printf \'%s\' \\"$0\\" > /out"]\n',
        'SHELL ["/bin/sh", "-ec"]\n',
        'SHELL ["/bin/bash", "-c", "x"]\n',
        'SHELL ["/usr/bin/env", "python3", "-c"]\n',
    ],
)
def test_blanks_count_under_any_shell_not_known_to_read_sh(shell: str) -> None:
    assert key(BASE + shell + "RUN a   b\n") != key(BASE + shell + "RUN a b\n")


def test_heredoc_command_line_is_kept_under_a_python_shell() -> None:
    wide = key(BASE + PYTHON + "RUN <<EOF   cat\nprint(1)\nEOF\n")
    narrow = key(BASE + PYTHON + "RUN <<EOF cat\nprint(1)\nEOF\n")
    assert wide != narrow


def test_blanks_are_separators_under_the_default_shell() -> None:
    assert key(BASE + "RUN a   b\n") == key(BASE + "RUN a b\n")


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash", "sh", "bash"])
def test_blanks_are_separators_under_sh_like_shells(shell: str) -> None:
    line = f'SHELL ["{shell}", "-c"]\n'
    assert key(BASE + line + "RUN a   b\n") == key(BASE + line + "RUN a b\n")


def test_switching_back_to_sh_collapses_again() -> None:
    def text(first: str, second: str) -> str:
        return BASE + PYTHON + f"RUN {first}\n" + 'SHELL ["/bin/sh", "-c"]\n' + f"RUN {second}\n"

    assert key(text("a   b", "c d")) != key(text("a b", "c d"))
    assert key(text("a b", "c   d")) == key(text("a b", "c d"))


def test_bash_ansi_c_quoting_is_kept() -> None:
    bash = 'SHELL ["/bin/bash", "-c"]\n'
    # bash reads `$'it\'s   x'` as one word, `it's   x`, and `\'` as a quote
    wide = key(BASE + bash + "RUN echo $'it\\'s   x' \\'\n")
    narrow = key(BASE + bash + "RUN echo $'it\\'s x' \\'\n")
    assert wide != narrow


ORDINARY = """\
FROM e2bdev/code-interpreter:latest
RUN pip  install \\
    numpy   pandas\t
ENV MODE=fast
RUN <<EOF
echo  ready
EOF
SHELL ["/bin/bash", "-c"]
RUN echo   a
"""

# The text this Dockerfile normalised to before shells were told apart: its cache key must stay.
ORDINARY_NORMALISED = """\
orch-dockerfile/1
["FROM"]
["RUN", [], ["pip install numpy pandas"], false, []]
["ENV", [], ["MODE", "fast"], false, []]
["RUN", [], ["<<EOF"], false, [["EOF", "echo  ready\\n"]]]
["SHELL", [], ["/bin/bash", "-c"], true, []]
["RUN", [], ["echo a"], false, []]
"""


def test_an_ordinary_dockerfile_normalises_as_before() -> None:
    assert key(ORDINARY) == ORDINARY_NORMALISED
