"""Real-shaped Dockerfiles that environments build, and what validation keeps of them."""

from __future__ import annotations

from orch.dockerfile import Severity, validate
from tests.unit.dockerfile.support import BASE, errors, keywords, warnings, where

PIP = """\
FROM e2bdev/code-interpreter:latest

# data stack
RUN pip install --no-cache-dir \\
    numpy==1.26.4 \\
    # pandas pinned for the parquet reader
    pandas==2.2.2 \\
    scikit-learn

ENV PYTHONUNBUFFERED=1
"""

APT = """\
FROM e2bdev/code-interpreter:latest
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ffmpeg libsm6 \\
 && rm -rf /var/lib/apt/lists/*
WORKDIR /home/user
USER root
LABEL org.opencontainers.image.title="ffmpeg tools" version=1
"""


def test_pip_install_with_continuations_and_comments() -> None:
    v = validate(PIP)
    assert v.ok and v.findings == ()
    assert keywords(v) == ["FROM", "RUN", "ENV"]
    run = v.instructions[1]
    assert (run.line, run.end_line) == (4, 8)
    assert run.args == ("pip install --no-cache-dir     numpy==1.26.4     pandas==2.2.2     scikit-learn",)


def test_apt_get_with_cleanup_and_metadata() -> None:
    v = validate(APT)
    assert v.ok and v.findings == ()
    assert keywords(v) == ["FROM", "ARG", "RUN", "WORKDIR", "USER", "LABEL"]
    assert v.instructions[-1].args == ("org.opencontainers.image.title", '"ffmpeg tools"', "version", "1")


def test_env_forms() -> None:
    v = validate(BASE + 'ENV A=1 B="two words" C=\nENV LEGACY some value\nENV D=$A:x\n')
    assert v.ok
    assert [i.args for i in v.instructions[1:]] == [
        ("A", "1", "B", '"two words"', "C", ""),
        ("LEGACY", "some\\ value"),
        ("D", "$A:x"),
    ]


def test_lower_case_instructions_are_upper_cased() -> None:
    v = validate("from e2bdev/code-interpreter:latest as base\nrun echo hi\nenv A=1\n")
    assert v.ok
    assert keywords(v) == ["FROM", "RUN", "ENV"]


def test_crlf_and_bom() -> None:
    v = validate("\ufeffFROM e2bdev/code-interpreter:latest\r\nRUN echo a \\\r\n  b\r\nENV A=1\r\n")
    assert v.ok
    assert [(i.keyword, i.line, i.args) for i in v.instructions] == [
        ("FROM", 1, ("e2bdev/code-interpreter:latest",)),
        ("RUN", 2, ("echo a   b",)),
        ("ENV", 4, ("A", "1")),
    ]


def test_accepted_spellings_of_the_base() -> None:
    for image in (
        "e2bdev/code-interpreter:latest",
        "docker.io/e2bdev/code-interpreter:latest",
        "e2bdev/code-interpreter",
        # Docker Hub's other names: the same image (issue 10).
        "index.docker.io/e2bdev/code-interpreter:latest",
        "index.docker.io/e2bdev/code-interpreter",
        "registry-1.docker.io/e2bdev/code-interpreter:latest",
        '"e2bdev/code-interpreter:latest"',  # Docker removes the quotes
    ):
        assert validate(f"FROM {image}\nRUN true\n").ok, image
    assert validate("FROM e2bdev/code-interpreter:latest AS build\nRUN true\n").ok


def test_escape_directive_continues_lines_with_backticks() -> None:
    v = validate("# escape=`\nFROM e2bdev/code-interpreter:latest\nRUN echo a `\n  b\nENV P=C:\\tools\n")
    assert v.ok
    assert v.instructions[1].args == ("echo a   b",)
    # Rewritten to the backslash escape: the value is still C:\tools.
    assert v.instructions[2].args == ("P", "C:\\\\tools")


def test_escape_directive_after_a_bom() -> None:
    v = validate("\ufeff# escape=`\nFROM e2bdev/code-interpreter:latest\nRUN a `\n b\n")
    assert v.ok
    assert v.instructions[1].args == ("a  b",)


def test_heredocs() -> None:
    text = BASE + (
        "RUN <<EOF\napt-get update\nEOF\n"
        "RUN <<-'SCRIPT' bash\n\techo $HOME\n\tSCRIPT\n"
        'RUN cat <<"EOF" > /etc/motd\nhi $USER\nEOF\n'
        "RUN <<A cat > /a && <<B cat > /b\naa\nA\nbb\nB\n"
        "RUN --mount=type=cache,target=/root/.cache/pip <<EOF\npip install httpx\nEOF\n"
    )
    v = validate(text)
    assert v.ok and v.findings == ()
    assert [(i.line, i.end_line, i.heredocs) for i in v.instructions[1:]] == [
        (2, 4, (("EOF", "apt-get update\n"),)),
        (5, 7, (("SCRIPT", "\techo $HOME\n"),)),
        (8, 10, (("EOF", "hi $USER\n"),)),
        (11, 15, (("A", "aa\n"), ("B", "bb\n"))),
        (16, 18, (("EOF", "pip install httpx\n"),)),
    ]


def test_json_form_and_shell() -> None:
    v = validate(BASE + 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]\nRUN ["python3", "-c", "print(1)"]\n')
    assert v.ok
    assert [(i.keyword, i.json_form, i.args) for i in v.instructions[1:]] == [
        ("SHELL", True, ("/bin/bash", "-o", "pipefail", "-c")),
        ("RUN", True, ("python3", "-c", "print(1)")),
    ]


def test_cache_and_tmpfs_mounts() -> None:
    v = validate(
        BASE + "RUN --mount=type=cache,target=/root/.cache/pip --mount=type=tmpfs,target=/tmp pip install x\n"
    )
    assert v.ok


def test_ignored_instructions_warn_and_are_dropped() -> None:
    text = BASE + (
        "RUN echo hi\n"
        'CMD ["python", "main.py"]\n'
        "ENTRYPOINT python\n"
        "HEALTHCHECK --interval=5s CMD curl -f http://localhost/\n"
        "STOPSIGNAL SIGTERM\n"
        "MAINTAINER someone <a@b.c>\n"
    )
    v = validate(text)
    assert v.ok
    assert where(warnings(v)) == [
        (3, "CMD"),
        (4, "ENTRYPOINT"),
        (5, "HEALTHCHECK"),
        (6, "STOPSIGNAL"),
        (7, "MAINTAINER"),
    ]
    assert "sandbox sets its own command" in v.findings[0].message
    assert "LABEL maintainer=" in v.findings[-1].fix
    assert keywords(v) == ["FROM", "RUN"]


def test_syntax_directive_warns() -> None:
    v = validate("# syntax=docker/dockerfile:1.4\n" + BASE + "RUN true\n")
    assert v.ok
    assert where(list(v.findings)) == [(1, "")]
    assert v.findings[0].severity is Severity.WARNING


def test_warnings_alone_keep_ok_and_to_dict() -> None:
    v = validate(BASE + "CMD x\n")
    assert v.to_dict() == {
        "ok": True,
        "findings": [
            {
                "line": 2,
                "instruction": "CMD",
                "severity": "warning",
                "message": "CMD is ignored: the sandbox sets its own command.",
                "fix": "Remove it, or keep it for local use.",
            }
        ],
    }
    assert errors(v) == []
