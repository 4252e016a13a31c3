"""The cache key text: cosmetic variants share it, changes of meaning don't."""

from __future__ import annotations

import pytest

from orch.dockerfile import normalised, validate
from orch.dockerfile.blanks import collapse_blanks

REFERENCE = """\
FROM e2bdev/code-interpreter:latest
RUN pip install numpy pandas
ENV MODE=fast LEVEL="two words"
RUN <<EOF
echo ready
EOF
"""

COSMETIC = {
    "comments and blank lines": (
        "# syntax=docker/dockerfile:1\n# our env\nFROM e2bdev/code-interpreter:latest\n\n"
        "# deps\nRUN pip install numpy pandas\n\n"
        'ENV MODE=fast LEVEL="two words"\nRUN <<EOF\necho ready\nEOF\n'
    ),
    "continuations": (
        "FROM e2bdev/code-interpreter:latest\nRUN pip install \\\n    numpy \\\n    # sorted\n    pandas\n"
        'ENV MODE=fast \\\n    LEVEL="two words"\nRUN <<EOF\necho ready\nEOF\n'
    ),
    "keyword case": (
        "from e2bdev/code-interpreter:latest\nrun pip install numpy pandas\n"
        'env MODE=fast LEVEL="two words"\nRun <<EOF\necho ready\nEOF\n'
    ),
    "CRLF": REFERENCE.replace("\n", "\r\n"),
    "ignored instructions": REFERENCE + 'CMD ["python3"]\nHEALTHCHECK NONE\nMAINTAINER me\n',
    "stage name and registry": REFERENCE.replace(
        "FROM e2bdev/code-interpreter:latest", "FROM docker.io/e2bdev/code-interpreter:latest AS env"
    ),
    "escape directive": "# escape=`\n" + REFERENCE.replace("pip install numpy", "pip install `\n  numpy"),
    "extra blanks": REFERENCE.replace("pip install numpy pandas", "pip  install\tnumpy   pandas  "),
}

MEANINGFUL = {
    "an appended step": REFERENCE + "RUN pip install httpx\n",
    "another package": REFERENCE.replace("pandas", "polars"),
    "a pinned version": REFERENCE.replace("pandas", "pandas==2.2.2"),
    "an ENV value": REFERENCE.replace("MODE=fast", "MODE=slow"),
    "an ENV name": REFERENCE.replace("MODE=fast", "MODE_=fast"),
    "blanks inside quotes": REFERENCE.replace('"two words"', '"two  words"'),
    "reordered steps": REFERENCE.replace(
        "RUN pip install numpy pandas\nENV MODE=fast", "ENV MODE=fast"
    ).replace('words"\n', 'words"\nRUN pip install numpy pandas\n', 1),
    "a heredoc body": REFERENCE.replace("echo ready", "echo steady"),
    "a cache mount": REFERENCE.replace("RUN pip", "RUN --mount=type=cache,target=/root/.cache pip"),
    "exec form": REFERENCE.replace(
        "RUN pip install numpy pandas", 'RUN ["pip", "install", "numpy", "pandas"]'
    ),
    "a shell": REFERENCE + 'SHELL ["/bin/bash", "-c"]\n',
    "a user": REFERENCE + "USER nobody\n",
}


def key(text: str) -> str:
    v = validate(text)
    assert v.ok, v.findings
    return normalised(v.instructions)


@pytest.mark.parametrize("name", sorted(COSMETIC))
def test_cosmetic_variants_share_the_key(name: str) -> None:
    assert key(COSMETIC[name]) == key(REFERENCE)


@pytest.mark.parametrize("name", sorted(MEANINGFUL))
def test_meaningful_changes_change_the_key(name: str) -> None:
    assert key(MEANINGFUL[name]) != key(REFERENCE)


def test_all_meaningful_variants_differ_from_each_other() -> None:
    keys = [key(t) for t in MEANINGFUL.values()]
    assert len(set(keys)) == len(keys)


def test_legacy_env_equals_quoted_form() -> None:
    base = "FROM e2bdev/code-interpreter:latest\n"
    assert key(base + 'ENV GREETING "hi there"\n') == key(base + 'ENV GREETING="hi there"\n')


def test_text_is_versioned_with_a_line_per_instruction() -> None:
    text = key(REFERENCE)
    assert text.splitlines()[0] == "orch-dockerfile/1"
    assert len(text.splitlines()) == 1 + 4


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("pip  install \t numpy", "pip install numpy"),
        ("  leading and trailing  ", "leading and trailing"),
        ("echo 'a  b'  \"c  d\"", "echo 'a  b' \"c  d\""),
        ("echo a\\  b", "echo a\\  b"),
        ("echo $(echo  x)   `echo  y`", "echo $(echo x) `echo y`"),
        ('echo "$(echo "a  b")"', 'echo "$(echo "a  b")"'),
        ("A=${B:-x  y}  cmd", "A=${B:-x  y} cmd"),
        ("echo $((1  +  2))", "echo $((1 + 2))"),
    ],
)
def test_collapse_blanks(command: str, expected: str) -> None:
    assert collapse_blanks(command) == expected


@pytest.mark.parametrize("command", ["echo 'open  quote", "case $x in a)  echo a;; esac", 'echo "open  dq'])
def test_collapse_blanks_leaves_what_it_cannot_follow(command: str) -> None:
    assert collapse_blanks(command) == command
