"""Dockerfiles environments refuse: every finding names the line, the instruction and a fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orch.dockerfile import Severity, validate
from tests.unit.dockerfile.support import BASE, errors, where


@pytest.mark.parametrize(
    ("line", "keyword", "why"),
    [
        ("COPY requirements.txt /app/", "COPY", "no build context"),
        ("ADD ./x.tgz /opt/", "ADD", "no build context"),
        ("ADD https://example.org/x.tgz /opt/", "ADD", "not even for a download"),
        ("COPY <<EOF /etc/x\nhi\nEOF", "COPY", "not even from a heredoc"),
        ("EXPOSE 8080", "EXPOSE", "don't expose ports"),
        ("VOLUME /data", "VOLUME", "volumes"),
        ("ONBUILD RUN echo hi", "ONBUILD", "base of another build"),
    ],
)
def test_rejected_instruction_names_its_line(line: str, keyword: str, why: str) -> None:
    v = validate(BASE + "RUN pip install requests\n\n" + line + "\nRUN echo after\n")
    assert not v.ok
    assert v.instructions == ()
    [finding] = errors(v)
    assert (finding.line, finding.instruction) == (4, keyword)
    assert why in finding.message
    assert finding.fix


def test_copy_fix_points_at_pip_and_apt() -> None:
    [finding] = errors(validate(BASE + "COPY . /app\n"))
    assert "pip" in finding.fix and "apt-get" in finding.fix


def test_several_problems_are_all_reported_in_line_order() -> None:
    text = BASE + "COPY a b\nEXPOSE 80\nCMD x\nVOLUME /v\n"
    v = validate(text)
    assert [(f.line, f.instruction, f.severity) for f in v.findings] == [
        (2, "COPY", Severity.ERROR),
        (3, "EXPOSE", Severity.ERROR),
        (4, "CMD", Severity.WARNING),
        (5, "VOLUME", Severity.ERROR),
    ]


def test_wrong_base_image() -> None:
    [finding] = errors(validate("FROM python:3.11-slim\nRUN pip install numpy\n"))
    assert (finding.line, finding.instruction) == (1, "FROM")
    assert "python:3.11-slim" in finding.message
    assert "e2bdev/code-interpreter:latest" in finding.fix


@pytest.mark.parametrize(
    "image",
    [
        "e2bdev/code-interpreter:v1",
        "E2BDEV/code-interpreter:latest",
        "$BASE",
        "e2bdev/code-interpreter@sha256:00",
        # library/ only applies to single-name official images; this is another repository.
        "docker.io/library/e2bdev/code-interpreter:latest",
        "ghcr.io/e2bdev/code-interpreter:latest",
        "Docker.io/e2bdev/code-interpreter:latest",
    ],
)
def test_other_spellings_are_other_images(image: str) -> None:
    assert where(errors(validate(f"FROM {image}\nRUN true\n"))) == [(1, "FROM")]


def test_multi_stage_build() -> None:
    text = (
        "FROM e2bdev/code-interpreter:latest AS build\nRUN make\n"
        "FROM e2bdev/code-interpreter:latest\nCOPY --from=build /out /out\n"
    )
    v = validate(text)
    assert where(errors(v)) == [(3, "FROM"), (4, "COPY")]
    assert "multi-stage" in errors(v)[0].message


def test_missing_from() -> None:
    [finding] = errors(validate("# no base\nRUN pip install numpy\n"))
    assert (finding.line, finding.instruction) == (2, "FROM")


def test_instruction_before_from() -> None:
    # Only ARG may come before FROM (see test_global_args.py).
    v = validate("ENV VERSION=1\n" + BASE + "RUN echo $VERSION\n")
    [finding] = errors(v)
    assert (finding.line, finding.instruction) == (1, "ENV")
    assert "before FROM" in finding.message and "only ARG" in finding.message


def test_from_platform_and_other_flags() -> None:
    assert where(errors(validate("FROM --platform=linux/amd64 e2bdev/code-interpreter:latest\n"))) == [
        (1, "FROM")
    ]
    [finding] = errors(validate("FROM --platform=$BUILDPLATFORM e2bdev/code-interpreter:latest\n"))
    assert "--platform" in finding.message and "--platform" in finding.fix


@pytest.mark.parametrize(
    "line", ["FROM", "FROM e2bdev/code-interpreter:latest AS", "FROM e2bdev/code-interpreter x y"]
)
def test_malformed_from(line: str) -> None:
    assert where(errors(validate(line + "\nRUN true\n"))) == [(1, "FROM")]


@pytest.mark.parametrize(
    ("flag", "needle"),
    [
        ("--mount=type=bind,source=.,target=/src", "type=bind"),
        ("--mount=target=/src", "type=bind"),  # bind is the default type
        ("--mount=type=secret,id=token", "type=secret"),
        ("--mount=type=ssh", "type=ssh"),
        ("--mount=type=nfs,target=/x", "type=nfs"),
        ("--mount=type=cache,from=builder,target=/x", "from="),
        ("--mount=type=cache", "target"),
        ("--network=host", "--network"),
        ("--network=none", "--network"),
        ("--security=insecure", "--security"),
        ("--privileged", "--privileged"),
    ],
)
def test_run_flags_builds_cannot_honour(flag: str, needle: str) -> None:
    [finding] = errors(validate(BASE + "RUN true\nRUN " + flag + " pip install x\n"))
    assert (finding.line, finding.instruction) == (3, "RUN")
    assert needle in finding.message


@pytest.mark.parametrize("text", ["", "   \n\t\n", "\n\n", "# only\n# comments\n", "\ufeff"])
def test_empty_file(text: str) -> None:
    v = validate(text)
    [finding] = v.findings
    assert (finding.line, finding.instruction, finding.severity) == (1, "", Severity.ERROR)
    assert "no instructions" in finding.message


def test_unknown_instruction_from_a_lost_continuation() -> None:
    text = BASE + "RUN pip install numpy\n    pandas\n"
    [finding] = errors(validate(text))
    assert (finding.line, finding.instruction) == (3, "PANDAS")
    assert '"pandas"' in finding.message
    assert "backslash" in finding.fix


def test_unknown_instruction_suggests_a_close_keyword() -> None:
    [finding] = errors(validate(BASE + "RUNN echo hi\n"))
    assert finding.fix.startswith("Did you mean RUN?")


def test_unterminated_heredoc_points_at_its_run() -> None:
    text = BASE + "RUN <<EOF\necho done\nEOF\nENV A=1\n\nRUN <<SCRIPT\necho never ends\n"
    [finding] = errors(validate(text))
    assert (finding.line, finding.instruction) == (7, "RUN")
    assert "unterminated heredoc" in finding.message
    assert "delimiter" in finding.fix


@pytest.mark.parametrize(
    ("text", "line", "keyword", "needle"),
    [
        (BASE + "RUN a\n\nENV ONLYNAME\nRUN b\n", 4, "ENV", "must have two arguments"),
        (BASE + "LABEL a=b \\\n  c\n", 2, "LABEL", "can't find ="),
        (BASE + 'RUN true\nRUN ["python", 3]\n', 3, "RUN", "JSON array"),
        ("# escape=x\n" + BASE, 1, "", "invalid escape token"),
        ("# escape=`\n# escape=\\\n" + BASE, 2, "", "only one escape"),
    ],
)
def test_parser_errors_name_the_failing_line(text: str, line: int, keyword: str, needle: str) -> None:
    v = validate(text)
    [finding] = v.findings
    assert (finding.line, finding.instruction, finding.severity) == (line, keyword, Severity.ERROR)
    assert needle in finding.message


def test_too_long_line() -> None:
    text = BASE + "RUN echo ok\nRUN echo " + "x" * 70_000 + "\n"
    [finding] = validate(text).findings
    assert finding.line == 3
    assert "65535" in finding.message


def test_nul_byte() -> None:
    # The parser gets strings over C and would silently cut the file at the NUL.
    [nul] = validate(BASE + "RUN echo a\x00b\n").findings
    assert (nul.line, nul.instruction) == (2, "")
    assert "NUL" in nul.message


def test_lone_surrogate() -> None:
    # The parser crashes the whole process on text that can't be UTF-8 encoded, so this runs
    # in a child process: a regression fails this test instead of killing the test run.
    code = (
        "from orch.dockerfile import validate\n"
        "[f] = validate('FROM e2bdev/code-interpreter:latest\\nRUN true\\nRUN echo \\udcff\\n').findings\n"
        "print(f.line, f.message)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.startswith("3 ") and "UTF-8" in out.stdout


def test_lone_continuation_at_the_end() -> None:
    [finding] = errors(validate(BASE + "RUN true\n\\\n"))
    assert (finding.line, finding.instruction) == (3, "")
    assert "continues into nothing" in finding.message


@pytest.mark.parametrize(
    ("line", "keyword", "needle"),
    [
        ("RUN", "RUN", "no command"),
        ("RUN []", "RUN", "no command"),
        ("RUN --mount=type=cache,target=/x", "RUN", "no command"),
        ('RUN ["echo", "a\\u0000b"]', "RUN", "NUL"),
        ("ENV", "ENV", "NAME=value"),
        ("ENV =x", "ENV", "no name"),
        ('ENV A="unclosed', "ENV", "never closed"),
        ("LABEL", "LABEL", "NAME=value"),
        ("ARG", "ARG", "needs a name"),
        ("ARG =x", "ARG", "needs a name"),
        ("ARG A='x", "ARG", "never closed"),
        ("WORKDIR", "WORKDIR", "needs a directory"),
        ("USER", "USER", "needs a user"),
        ("USER ${NAME", "USER", "never closed"),
        ("SHELL /bin/bash -c", "SHELL", "JSON array"),
        ("SHELL []", "SHELL", "at least"),
        ("ENV --foo A=1", "ENV", "no flags"),
        ("WORKDIR --chown=1 /x", "WORKDIR", "no flags"),
    ],
)
def test_argument_checks(line: str, keyword: str, needle: str) -> None:
    [finding] = errors(validate(BASE + line + "\n"))
    assert (finding.line, finding.instruction) == (2, keyword)
    assert needle in finding.message


def test_every_finding_says_why_and_what_to_do() -> None:
    text = "ARG X\nFROM python\nCOPY . .\nEXPOSE 1\nRUN --network=host x\nFROM a\nfoo\n"
    v = validate(text)
    assert len(v.findings) >= 6
    for f in v.findings:
        assert f.line >= 1 and f.message.endswith(".") and f.fix.endswith((".", "?"))
        assert f.instruction == f.instruction.upper()


def test_a_quoted_name_like_an_option_is_refused() -> None:
    """`ENV "--mount" x` names a variable, but written back out as `ENV "--mount"=x` BuildKit's
    parser reads an option (found by the rendering property test)."""
    v = validate(BASE + 'ENV "--mount" type=cache,target=/x\n')
    [finding] = errors(v)
    assert (finding.line, finding.instruction) == (2, "ENV")
    assert "looks like an option" in finding.message and finding.fix
    assert validate(BASE + 'ENV "mount" type=cache,target=/x\n').ok
