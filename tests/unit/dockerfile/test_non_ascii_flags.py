"""Flags with non-ASCII characters, which BuildKit's parser splits byte by byte (issue 10, item 1).

堀 is E5 A0 80 in UTF-8: the parser takes 0xA0 for a blank and cuts the character in two, and
the binding then fails on the rest of the line. 你 (E4 BD A0) is cut at its end, so the parse
"succeeds" with the flag `target=/data/ä½` and the command `好 true`.
"""

from __future__ import annotations

import dockerfile
import pytest

from orch.dockerfile import Severity, validate
from orch.dockerfile.builder_flags import garbled_flag
from tests.unit.dockerfile.support import BASE, errors, warnings, where


def test_the_parser_garbles_these_flags() -> None:
    """What the fix protects against; if the binding ever stops doing this, the check can go."""
    [_, run] = dockerfile.parse_string(BASE + "RUN --mount=type=cache,target=/data/你好 true\n")
    assert run.flags == ("--mount=type=cache,target=/data/ä½",) and run.value == ("好 true",)
    with pytest.raises(UnicodeDecodeError):
        dockerfile.parse_string(BASE + "RUN --mount=type=cache,target=/root/堀 true\n")


@pytest.mark.parametrize("path", ["/root/堀", "/data/你好", "/data/à", "/café", '"/my 目录"', "/x/充"])
def test_a_run_flag_with_a_non_ascii_character_is_refused(path: str) -> None:
    v = validate(BASE + f"RUN --mount=type=cache,target={path} true\nRUN echo after\n")
    [finding] = v.findings
    assert (finding.line, finding.instruction, finding.severity) == (2, "RUN", Severity.ERROR)
    assert "--mount" in finding.message and "non-ASCII" in finding.message
    assert next(c for c in path if not c.isascii()) in finding.message
    assert "ASCII" in finding.fix


@pytest.mark.parametrize(
    ("line", "keyword", "severity", "needle"),
    [
        ("COPY --chown=堀 a /b", "COPY", Severity.ERROR, "no build context"),
        ("ADD --chown=你好 a /b", "ADD", Severity.ERROR, "no build context"),
        ("HEALTHCHECK --interval=5秒 CMD true", "HEALTHCHECK", Severity.WARNING, "ignored"),
        ("ONBUILD RUN --mount=type=cache,target=/堀 true", "ONBUILD", Severity.ERROR, "not supported"),
        ("ENV --x=堀 A=1", "ENV", Severity.ERROR, "non-ASCII"),
    ],
)
def test_other_instructions_keep_their_verdict(
    line: str, keyword: str, severity: Severity, needle: str
) -> None:
    v = validate(BASE + line + "\nRUN true\n")
    [finding] = v.findings
    assert (finding.line, finding.instruction, finding.severity) == (2, keyword, severity)
    assert needle in finding.message


@pytest.mark.parametrize("platform", ["linux/堀", "linux/amd64/你好"])
def test_from_platform_with_a_non_ascii_character(platform: str) -> None:
    [finding] = errors(validate(f"FROM --platform={platform} e2bdev/code-interpreter:latest\nRUN true\n"))
    assert (finding.line, finding.instruction) == (1, "FROM")
    assert "--platform" in finding.message


def test_the_rest_of_the_file_is_still_checked() -> None:
    text = BASE + (
        "RUN --mount=type=cache,target=/root/堀 <<EOF\nEXPOSE 1\nEOF\n"  # the body is not instructions
        "RUN --mount=type=cache,target=/root/ok true\n"
        "EXPOSE 80\n"
    )
    v = validate(text)
    assert where(errors(v)) == [(2, "RUN"), (6, "EXPOSE")]
    assert warnings(v) == []


def test_non_ascii_outside_flags_is_fine() -> None:
    v = validate(BASE + "RUN --mount=type=cache,target=/root/.cache echo 堀 你好 à\nLABEL 名前=値\n")
    assert v.ok, v.findings
    assert v.instructions[1].args == ("echo 堀 你好 à",)


@pytest.mark.parametrize(
    ("line", "flag"),
    [
        ("RUN --a=1 --b=é x", "--b"),
        ('RUN --a="x y" --b="é z" x', "--b"),
        ("RUN --a=\\é x", "--a"),
        ("ONBUILD RUN --m=é x", "--m"),
        ("RUN -- --m=é", None),  # after --, words are the command
        ("RUN x --m=é", None),
        ("RUN --m=x é", None),
    ],
)
def test_garbled_flag_follows_the_parsers_splitting(line: str, flag: str | None) -> None:
    found = garbled_flag(line, ())
    assert (found.name if found else None) == flag
