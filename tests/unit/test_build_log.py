"""What a build's log says to the user: the failure's excerpt, and steps numbered as in the
user's Dockerfile (pure functions, no platform)."""

from __future__ import annotations

import pytest

from orch import dockerfile
from orch.services import build_log
from orch.services.build_log import StepNumbers, base_step, decisive, excerpt

NOISE = [f"  noise line {i}" for i in range(30)]

# What pip prints for a requirement from a Git URL when github.com can't be resolved: the line
# that says why is followed by two summaries and Podman's own error.
PIP_FROM_GIT = [
    "STEP 1/2: FROM localhost/orch/code-interpreter:0123456789ab",
    "STEP 2/2: RUN pip install git+https://github.com/example/pkg",
    "Collecting git+https://github.com/example/pkg",
    "  Cloning https://github.com/example/pkg to /tmp/pip-req-build-x",
    "  Running command git clone --quiet https://github.com/example/pkg /tmp/pip-req-build-x",
    "  fatal: unable to access 'https://github.com/example/pkg/': Could not resolve host: github.com",
    "  error: subprocess-exited-with-error",
    "  ",
    "  × git clone --quiet https://github.com/example/pkg /tmp/x did not run successfully.",
    "  │ exit code: 128",
    "  ╰─> See above for output.",
    "  ",
    "  note: This error originates from a subprocess, and is likely not a problem with pip.",
    "error: subprocess-exited-with-error",
    "",
    "× git clone --quiet https://github.com/example/pkg /tmp/x did not run successfully.",
    "│ exit code: 128",
    "╰─> See above for output.",
    "",
    "note: This error originates from a subprocess, and is likely not a problem with pip.",
    'Error: building at STEP "RUN pip install git+https://github.com/example/pkg": '
    "while running runtime: exit status 1",
]


def test_the_decisive_line_far_from_the_end_is_in_the_excerpt() -> None:
    fatal = PIP_FROM_GIT[5]
    assert fatal not in PIP_FROM_GIT[-12:]  # the CLI showed the last 12 lines: not this one
    picked = excerpt(PIP_FROM_GIT)
    assert fatal in picked
    assert PIP_FROM_GIT[1] in picked  # the failing step
    assert picked[-1] == PIP_FROM_GIT[-1]  # and the last lines
    assert PIP_FROM_GIT[0] not in picked  # an earlier step's line is not


def test_noise_between_is_left_out_and_counted() -> None:
    lines = ["STEP 2/2: RUN ./install", "fatal: could not resolve host", *NOISE, "Error: exit status 1"]
    picked = excerpt(lines)
    assert picked[:2] == lines[:2]
    gap = 30 - (build_log.EXCERPT_LAST - 1)
    assert picked[2] == f"… {gap} lines not shown …"
    assert picked[3:] == lines[-build_log.EXCERPT_LAST :]


def test_only_the_failing_step_counts() -> None:
    lines = [
        "STEP 2/3: RUN apt-get install -y libgpg-error-dev",
        "E: a warning-like line of a step that succeeded",
        *NOISE,
        "STEP 3/3: RUN ./configure",
        "configure: cannot find libfoo",
        *NOISE,
    ]
    picked = excerpt(lines)
    assert not any("E: a warning-like" in line for line in picked)
    assert "STEP 3/3: RUN ./configure" in picked


def test_the_last_lines_are_the_failing_steps_own() -> None:
    """A failing step that printed little: the excerpt's last lines did reach back into the
    step before it (`27 28 29 30 --> 8d005e54c56`, found by a tester)."""
    lines = [
        "STEP 2/3: RUN seq 1 30",
        *[str(i) for i in range(1, 31)],
        "--> 8d005e54c56",
        "STEP 3/3: RUN sh -c 'echo error: boom2 >&2; exit 3'",
        "error: boom2",
        'Error: building at STEP "RUN sh -c ...": while running runtime: exit status 3',
    ]
    assert excerpt(lines) == lines[-3:]


def test_many_decisive_lines_keep_their_first_and_last() -> None:
    lines = ["STEP 2/2: RUN npm install", *(f"npm ERR! line {i}" for i in range(1000)), "done"]
    picked = excerpt(lines)
    kept = [line for line in picked if line.startswith("npm ERR!")]
    assert kept[:6] == [f"npm ERR! line {i}" for i in range(6)]
    assert "npm ERR! line 999" in kept and "npm ERR! line 500" not in kept
    gaps = sum(1 for line in picked if line.endswith("not shown …"))
    assert len(picked) <= 1 + build_log.EXCERPT_MATCHES + build_log.EXCERPT_LAST + gaps


def test_a_long_line_is_cut() -> None:
    picked = excerpt(["STEP 2/2: RUN yes", "x" * 100_000])
    assert len(picked[-1]) == build_log.EXCERPT_WIDTH + 1 and picked[-1].endswith("…")


def test_no_output_no_excerpt() -> None:
    assert excerpt([]) == []


@pytest.mark.parametrize(
    "line",
    [
        "fatal: unable to access 'https://github.com/x/': Could not resolve host: github.com",
        "ERROR: No matching distribution found for nosuchpackage",
        "npm error code E404",
        "npm ERR! 404 Not Found - GET https://registry.npmjs.org/nosuch",
        "E: Unable to locate package nosuch",
        "Traceback (most recent call last):",
        "ModuleNotFoundError: No module named 'nosuch'",
        "/bin/sh: 1: nosuch: not found",
        "bash: line 1: nosuch: command not found",
        'Error: building at STEP "RUN exit 1": while running runtime: exit status 1',
    ],
)
def test_decisive_lines(line: str) -> None:
    assert decisive(line)


@pytest.mark.parametrize(
    "line",
    [
        "Setting up libgpg-error0:amd64 (1.46-1) ...",
        "Successfully installed six-1.16.0",
        "Collecting six",
        "  Downloading six-1.16.0-py2.py3-none-any.whl (11 kB)",
        "added 1 package in 2s",
    ],
)
def test_ordinary_lines(line: str) -> None:
    assert not decisive(line)


DOCKERFILE = """\
# a comment is not an instruction
FROM e2bdev/code-interpreter:latest
SHELL ["/bin/bash", "-c"]
RUN echo one
CMD ["python"]
RUN echo two
"""


def _numbers(text: str) -> StepNumbers:
    validation = dockerfile.validate(text)
    assert validation.ok
    return StepNumbers.of(text, validation.instructions)


def test_steps_are_numbered_as_in_the_dockerfile() -> None:
    numbers = _numbers(DOCKERFILE)
    # FROM, SHELL, RUN, CMD, RUN: Podman runs FROM, RUN, RUN (SHELL and CMD are not written out).
    assert numbers.numbers == (1, 3, 5) and numbers.total == 5
    line, step = numbers.rewrite('STEP 2/5: RUN ["/bin/bash","-c","echo one"]')
    assert line == 'STEP 3/5: RUN ["/bin/bash","-c","echo one"]'
    assert step == (3, "RUN echo one")  # the progress quotes the user's instruction
    assert numbers.rewrite("STEP 3/5: RUN x")[0] == "STEP 5/5: RUN x"


def test_the_progress_quotes_the_users_instruction_not_the_rendered_one() -> None:
    """A cache mount's `id` is rewritten for Podman (docs/environments.md, "Cache mounts"), a
    heredoc becomes a plain RUN: the log's STEP line shows what Podman ran, the progress (and so
    a failure's message) the instruction as the user wrote it."""
    text = (
        "FROM e2bdev/code-interpreter:latest\n"
        "RUN --mount=type=cache,target=/x,id=mine \\\n    ls /x\n"
        "RUN <<EOF\necho heredoc\nEOF\n"
    )
    numbers = _numbers(text)
    assert numbers.texts == (
        "FROM e2bdev/code-interpreter:latest",
        "RUN --mount=type=cache,target=/x,id=mine     ls /x",
        "RUN <<EOF",
    )
    podman = "RUN --mount=type=cache,target=/x,id=orch-23aa70b0f59b-06d21b85b523-b3d1db318671a024     ls /x"
    line, step = numbers.rewrite(f"STEP 2/5: {podman}")
    assert line == f"STEP 2/3: {podman}"
    assert step == (2, "RUN --mount=type=cache,target=/x,id=mine     ls /x")
    assert numbers.rewrite("STEP 3/5: RUN echo heredoc")[1] == (3, "RUN <<EOF")


def test_orchs_own_steps_are_marked() -> None:
    numbers = _numbers(DOCKERFILE)
    line, step = numbers.rewrite('STEP 4/5: LABEL "org.orch.kind"="environment"')
    assert (line, step) == ('STEP (orch): LABEL "org.orch.kind"="environment"', None)
    assert numbers.rewrite("--> 8a3dc61a161") == ("--> 8a3dc61a161", None)
    # The server's data directory is a path on its machine: named, not shown.
    home = numbers.rewrite('STEP 5/5: LABEL "org.orch.home"="/root/.orch"')[0]
    assert home == 'STEP (orch): LABEL "org.orch.home"="…"'
    assert base_step("STEP 2/3: RUN pip install uv") == "STEP (orch, base image): RUN pip install uv"
    assert base_step("hi") == "hi"


@pytest.mark.parametrize(
    ("text", "total"),
    [
        (DOCKERFILE, 5),
        # A folded line (over 8000 characters), a heredoc and instructions of every built kind.
        (
            "FROM e2bdev/code-interpreter:latest\nARG A=1\nENV B=2\nLABEL c=3\nWORKDIR /w\nUSER root\n"
            f"RUN echo {'x' * 20_000}\nRUN <<EOF\necho heredoc\nEOF\nSTOPSIGNAL SIGTERM\n",
            9,
        ),
    ],
)
def test_the_numbering_covers_every_rendered_step(text: str, total: int) -> None:
    validation = dockerfile.validate(text)
    rendered = dockerfile.render_containerfile(validation.instructions, "localhost/orch/base:x")
    steps = [line for line in rendered.replace("\\\n", "").splitlines() if line.strip()]
    numbers = _numbers(text)
    assert len(numbers.numbers) == len(steps) and numbers.total == total
