"""A build Podman stops because it could not read an instruction (`Error: resolving step`) names
that instruction's line, and no failed step.

Found by a tester: `ENV REQ=${HOME:?mustbeset}` on line 3 failed the build as
`Step 2/8: ENV SQ=... failed (exit code 125)`, with that ENV as `failed_step`: Podman prints the
STEP line of an instruction only once it has read it, so the last one was the step before, and
its exit code (125) is Podman's own, no command's. Validation refuses such forms now
(test_substitution_modifiers.py); an environment created before, or another word Podman can't
read, still reaches the build.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orch import dockerfile
from orch.engine.base import BuildRequest, ImageInfo
from orch.engine.fake import FakeEngine
from orch.errors import BuildFailed, Conflict
from orch.services import build_log as steps
from orch.services import environments as envs
from orch.services.platform import Platform
from tests.conftest import build_log, drain

# Podman 4.3.1's own words for the tester's line 3 (its `podman build`, run on this Containerfile).
RESOLVING = (
    "Error: resolving step {Value:env Next:0xc0004d88c0 Children:[] Attributes:map[] "
    "Original:ENV REQ=${HOME:?mustbeset} ALT=${NOPE:+alt}x Flags:[] StartLine:3 EndLine:3}: "
    "Unsupported modifier (?) in substitution: ${HOME:?mustbeset}"
)
# Eight instructions as the tester's; line 3 is one Podman could not read. (It validates no
# more, so the build is given one that does and Podman's answer to the tester's.)
DOCKERFILE = """\
FROM e2bdev/code-interpreter:latest
ENV SQ="single quoted"
ENV REQ=${HOME:-mustbeset} ALT=${NOPE:+alt}x
RUN echo "$REQ $ALT"
WORKDIR /work
RUN pip --version
USER user
RUN echo done
"""


def _numbers(text: str) -> tuple[steps.StepNumbers, str]:
    v = dockerfile.validate(text)
    assert v.ok, v.findings
    return steps.StepNumbers.of(text, v.instructions), dockerfile.render_containerfile(v.instructions, "base")


def test_podmans_resolve_error_names_the_users_line() -> None:
    numbers, containerfile = _numbers(DOCKERFILE)
    tail = ["STEP 1/9: FROM base", 'STEP 2/9: ENV SQ="single quoted"', "--> 1ec9d64a726", RESOLVING]
    line, text, why = numbers.unread(tail, containerfile) or (0, "", "")
    assert (line, text) == (3, "ENV REQ=${HOME:-mustbeset} ALT=${NOPE:+alt}x")
    assert why == "Unsupported modifier (?) in substitution: ${HOME:?mustbeset}"


def test_a_containerfile_line_is_mapped_to_the_users_line() -> None:
    # A SHELL and a CMD print no step, a comment and a continued line take lines of their own,
    # and a long value is folded over several Containerfile lines: line 3 of the Containerfile
    # is no longer line 3 of the Dockerfile.
    text = (
        'FROM e2bdev/code-interpreter:latest\nSHELL ["/bin/bash", "-c"]\n# note\n'
        f'ENV LONG={"x" * 20_000}\nCMD ["python"]\nENV A=1 \\\n    B=2\nLABEL x=y\n'
    )
    numbers, containerfile = _numbers(text)
    lines = containerfile.split("\n")
    assert lines[1].endswith("\\") and lines[2].endswith("\\")  # the long ENV, folded
    starts = {n: ln for n, ln in enumerate(lines, 1) if ln.startswith(("ENV A", "LABEL"))}
    found = {
        n: numbers.unread([f"Error: resolving step {{StartLine:{n} EndLine:{n}}}: why"], containerfile)
        for n in starts
    }
    assert sorted(v for v in found.values() if v) == [(6, "ENV A=1     B=2", "why"), (8, "LABEL x=y", "why")]
    # A line inside a folded instruction, or past the end, is no instruction's start.
    assert numbers.unread(["Error: resolving step {StartLine:3 EndLine:3}: x"], containerfile) is None
    assert numbers.unread(["Error: resolving step {StartLine:99 EndLine:99}: x"], containerfile) is None
    assert numbers.unread(["Error: building at STEP ...: exit status 1"], containerfile) is None


@pytest.fixture
def podman_resolving(fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The fake engine, failing as Podman 4.3.1 fails on the tester's line 3: the steps before it
    printed, then its error, exit code 125 (as engine/podman.py raises it)."""

    def build(
        request: BuildRequest,
        on_output: Callable[[str], None],
        on_start: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImageInfo:
        total = len(request.containerfile.splitlines()) + len(request.labels)
        first = request.containerfile.splitlines()[:2]  # FROM and line 2's ENV
        printed = [f"STEP {k}/{total}: {ln}" for k, ln in enumerate(first, 1)]
        tail = [*printed, "--> 1ec9d64a726", RESOLVING]
        for line in tail:
            on_output(line)
        raise BuildFailed("podman build failed.", "See the build log.", exit_code=125, tail=tail)

    monkeypatch.setattr(fake_engine, "build", build)
    return fake_engine


def test_a_resolve_error_fails_no_step_and_names_line_3(
    platform: Platform, workspace: tuple[str, str], podman_resolving: FakeEngine
) -> None:
    env = envs.create(platform, workspace[0], "unread", DOCKERFILE)
    drain(platform)
    failed = envs.show(platform, workspace[0], "unread")
    assert failed.status == "failed"
    assert failed.build is not None and failed.build.failed_step is None
    # Its progress is that instruction's (Podman's last STEP line was the one before it).
    assert (failed.build.step, failed.build.step_text) == (3, "ENV REQ=${HOME:-mustbeset} ALT=${NOPE:+alt}x")
    error = failed.error or ""
    assert error.startswith(
        "Podman could not read line 3 of the Dockerfile (ENV REQ=${HOME:-mustbeset} ALT=${NOPE:+alt}x): "
        "Unsupported modifier (?) in substitution: ${HOME:?mustbeset}. "
    )
    assert "${VAR:-default}" in error and "RUN step" in error and "create it again" in error
    # Not the step before it, and not Podman's exit code as a command's.
    assert "exit code" not in error and "ENV SQ" not in error and "step 2/" not in error.lower()
    assert RESOLVING in build_log(platform, env.build_id)  # the log keeps Podman's own words


def test_its_fix_is_a_new_dockerfile_not_a_build_again(
    platform: Platform, workspace: tuple[str, str], podman_resolving: FakeEngine
) -> None:
    """No step failed, but the Dockerfile is at fault all the same: a build again fails the same
    way, so what refuses it (setting it as the default here; a run or a sandbox in it share
    `dockerfile_at_fault`) does not say `orch env build`."""
    envs.create(platform, workspace[0], "unread", DOCKERFILE)
    drain(platform)
    with pytest.raises(Conflict) as refused:
        envs.set_default(platform, workspace[0], "unread")
    assert "create it again with the Dockerfile fixed" in refused.value.fix, refused.value.fix
    assert "orch env build" not in refused.value.fix, refused.value.fix
