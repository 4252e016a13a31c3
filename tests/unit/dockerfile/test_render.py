"""The Containerfile handed to Podman 4.3.1."""

from __future__ import annotations

import hashlib
import json

import dockerfile
import pytest

from orch.dockerfile import BASE_IMAGE, Instruction, render_containerfile, validate
from tests.unit.dockerfile.support import BASE

TAG = "localhost/orch/code-interpreter:abc123"


def cache_id(theirs: str, owner: str = "") -> str:
    """The id a cache mount gets for the user's id (or target) `theirs` (cache_mounts.py)."""
    digest = hashlib.sha256(theirs.encode()).hexdigest()[:16]
    return f"orch-{owner}-{digest}" if owner else f"orch-{digest}"


def render(text: str) -> str:
    v = validate(text)
    assert v.ok, v.findings
    return render_containerfile(v.instructions, TAG)


def test_from_is_replaced_and_instructions_are_re_emitted() -> None:
    text = (
        "# build tools\nfrom e2bdev/code-interpreter:latest as base\n\n"
        "run pip install \\\n    numpy \\\n    pandas\n"
        'ENV A=1 B="two words"\nENV LEGACY some value\nARG X=1 Y\nLABEL k=v\n'
        "WORKDIR /home/user\nUSER root\nRUN --mount=type=cache,target=/root/.cache pip install httpx\n"
        'RUN ["python3", "-c", "print(1)"]\nCMD ["python3"]\n'
    )
    assert render(text) == (
        f"FROM {TAG}\n"
        "RUN pip install     numpy     pandas\n"
        'ENV A=1 B="two words"\n'
        "ENV LEGACY=some\\ value\n"
        "ARG X=1 Y\n"
        "LABEL k=v\n"
        "WORKDIR /home/user\n"
        "USER root\n"
        f"RUN --mount=type=cache,target=/root/.cache,id={cache_id('/root/.cache')} pip install httpx\n"
        'RUN ["python3", "-c", "print(1)"]\n'
    )


def test_heredoc_run_becomes_exec_form_with_the_shell() -> None:
    out = render(BASE + "RUN <<EOF\napt-get update\napt-get install -y jq\nEOF\n")
    assert out.splitlines()[1] == 'RUN ["/bin/sh", "-c", "apt-get update\\napt-get install -y jq\\n"]'
    out = render(BASE + "RUN cat <<EOF > /etc/motd\nhello\nEOF\n")
    assert out.splitlines()[1] == 'RUN ["/bin/sh", "-c", "cat <<EOF > /etc/motd\\nhello\\nEOF"]'


def test_shell_is_carried_into_later_runs() -> None:
    # Podman drops SHELL when writing OCI images, so each RUN names its shell itself.
    out = render(BASE + 'RUN echo sh\nSHELL ["/bin/bash", "-c"]\nRUN echo $BASH\nRUN <<EOF\necho x\nEOF\n')
    assert out.splitlines()[1:] == [
        "RUN echo sh",
        'RUN ["/bin/bash", "-c", "echo $BASH"]',
        'RUN ["/bin/bash", "-c", "echo x\\n"]',
    ]


@pytest.mark.parametrize(
    "command",
    ["echo trailing \\\\", "[ -f /etc/os-release ] && echo yes", "printf 'a\tb'"],
)
def test_commands_shell_form_would_mangle_use_exec_form(command: str) -> None:
    out = render(BASE + "RUN " + command + "\n")
    assert out.splitlines()[1] == "RUN " + json.dumps(["/bin/sh", "-c", command])


def test_command_that_looks_like_a_flag_stays_a_command() -> None:
    out = render(BASE + "RUN -- --version\n")
    assert out.splitlines()[1] == 'RUN ["/bin/sh", "-c", "--version"]'


def test_escape_directive_renders_to_backslash_escape() -> None:
    text = (
        "# escape=`\nFROM e2bdev/code-interpreter:latest\n"
        'ENV PATH_W=C:\\tools\\ Q="say `"hi`"" D=`$HOME\n'
        "WORKDIR C:\\work\n"
        "RUN dir C:\\ `\n  && echo done\n"
    )
    out = render(text)
    assert out == (
        f"FROM {TAG}\n"
        'ENV PATH_W=C:\\\\tools\\\\"" Q="say \\"hi\\"" D=\\$HOME\n'
        "WORKDIR C:\\\\work\n"
        "RUN dir C:\\   && echo done\n"
    )
    # Read back with the default escape, each instruction keeps its meaning.
    back = [(c.cmd, c.value) for c in dockerfile.parse_string(out)]
    assert back[1:] == [
        ("ENV", ("PATH_W", 'C:\\\\tools\\\\""', "Q", '"say \\"hi\\""', "D", "\\$HOME")),
        ("WORKDIR", ("C:\\\\work",)),
        ("RUN", ("dir C:\\   && echo done",)),
    ]


def test_flag_values_with_blanks_are_quoted() -> None:
    out = render(BASE + 'RUN --mount=type=cache,target="/root/my cache" ls\n')
    mine = cache_id("/root/my cache")
    assert out.splitlines()[1] == f'RUN --mount="type=cache,target=/root/my cache,id={mine}" ls'
    [_, run] = dockerfile.parse_string(out)
    assert run.flags == (f"--mount=type=cache,target=/root/my cache,id={mine}",)


def test_long_lines_are_folded_and_read_back_whole() -> None:
    body = "".join(f"echo line {i} >> /tmp/out # {'#' * (i % 7)}\n" for i in range(5000))
    out = render(BASE + "RUN <<EOF\n" + body + "EOF\n")
    assert max(len(line.encode()) for line in out.splitlines()) < 32_000
    [_, run] = dockerfile.parse_string(out)
    assert run.json and list(run.value) == ["/bin/sh", "-c", body]


def test_only_built_instructions_can_be_rendered() -> None:
    cmd = Instruction(1, 1, "CMD", (), ("x",), False, (), "CMD x")
    with pytest.raises(ValueError, match="CMD"):
        render_containerfile([cmd], TAG)


def test_render_is_deterministic() -> None:
    text = BASE + "RUN <<EOF\n#!/bin/sh\necho hi\nEOF\nENV A=1\n"
    v = validate(text)
    assert render_containerfile(v.instructions, BASE_IMAGE) == render_containerfile(
        validate(text).instructions, BASE_IMAGE
    )
