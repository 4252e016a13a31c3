"""Builds on the fake engine: the log, the progress and the error number steps as the user's
Dockerfile does, and a failure's record holds its decisive line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orch.builder import base_images
from orch.builder.cache import parse_step
from orch.engine.base import BuildRequest, ImageInfo
from orch.engine.fake import FakeEngine
from orch.services import environments as envs
from orch.services.platform import Platform
from tests.conftest import build_log, drain

# Five instructions; Podman runs three of them (no SHELL, no CMD), the last of which fails.
FAILING = """\
FROM e2bdev/code-interpreter:latest
SHELL ["/bin/bash", "-c"]
RUN echo one
CMD ["python"]
RUN echo start && exit 1
"""


@pytest.fixture
def podman_like(fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The fake engine, numbering and printing steps as Podman does: a LABEL step for each
    --label after the Containerfile's own, and output in a failing step."""
    real = fake_engine.build

    def build(
        request: BuildRequest,
        on_output: Callable[[str], None],
        on_start: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImageInfo:
        own = len(request.containerfile.splitlines())
        total = own + len(request.labels)

        def output(line: str) -> None:
            step = parse_step(line)
            if line.startswith("COMMIT"):
                for n, (k, v) in enumerate(sorted(request.labels.items()), own + 1):
                    on_output(f'STEP {n}/{total}: LABEL "{k}"="{v}"')
            elif step and "exit 1" in step[2]:
                on_output(f"STEP {step[0]}/{total}: {step[2]}")
                on_output("fatal: could not resolve host: example.com")
                for i in range(30):
                    on_output(f"noise {i}")
                return
            on_output(f"STEP {step[0]}/{total}: {step[2]}" if step else line)

        return real(request, output, on_start, should_stop)

    monkeypatch.setattr(fake_engine, "build", build)
    return fake_engine


def _log(platform: Platform, build_id: str | None) -> str:
    return build_log(platform, build_id)


def test_a_failure_is_numbered_as_in_the_dockerfile(
    platform: Platform, workspace: tuple[str, str], podman_like: FakeEngine
) -> None:
    env = envs.create(platform, workspace[0], "broken", FAILING)
    drain(platform)
    failed = envs.show(platform, workspace[0], "broken")
    assert failed.status == "failed"
    # The step as the user wrote it; the log shows what Podman ran (the SHELL applied).
    assert failed.error == "Step 5/5: RUN echo start && exit 1 failed (exit code 1)"
    assert failed.build is not None and failed.build.failed_step == "step 5/5: RUN echo start && exit 1"
    log = _log(platform, env.build_id)
    assert "STEP 1/5: FROM " in log and "STEP 3/5: RUN " in log
    assert 'STEP 5/5: RUN ["/bin/bash", "-c", "echo start && exit 1"]' in log
    assert "STEP 2/" not in log and "STEP 3/3" not in log  # Podman's own numbers are gone


def test_a_failed_step_with_a_cache_mount_is_quoted_as_the_user_wrote_it(
    platform: Platform, workspace: tuple[str, str], podman_like: FakeEngine
) -> None:
    """Podman runs the cache mount with an `id` of the platform's and the workspace's
    (docs/environments.md, "Cache mounts"); the progress and the failure quote the user's line."""
    text = "FROM e2bdev/code-interpreter:latest\nRUN --mount=type=cache,target=/x,id=mine ls /x && exit 1\n"
    env = envs.create(platform, workspace[0], "mounted", text)
    drain(platform)
    failed = envs.show(platform, workspace[0], "mounted")
    assert failed.status == "failed" and failed.build is not None
    user = "RUN --mount=type=cache,target=/x,id=mine ls /x && exit 1"
    assert failed.error == f"Step 2/2: {user} failed (exit code 1)"
    assert failed.build.failed_step == f"step 2/2: {user}" and failed.build.step_text == user
    log = _log(platform, env.build_id)
    assert "STEP 2/2: RUN --mount=type=cache,target=/x,id=orch-" in log  # what Podman ran


def test_the_failure_record_holds_the_decisive_line(
    platform: Platform, workspace: tuple[str, str], podman_like: FakeEngine
) -> None:
    envs.create(platform, workspace[0], "broken", FAILING)
    drain(platform)
    build = envs.show(platform, workspace[0], "broken").build
    assert build is not None
    lines = build.log_tail.splitlines()
    # 31 lines from the end, yet there: the failing step, the line that says why, the last lines.
    assert lines[0].startswith("STEP 5/5: RUN")
    assert "fatal: could not resolve host: example.com" in lines
    assert "noise 29" in lines and "noise 10" not in lines


def test_orchs_label_steps_are_marked_and_progress_counts_the_users(
    platform: Platform, workspace: tuple[str, str], podman_like: FakeEngine
) -> None:
    text = "FROM e2bdev/code-interpreter:latest\nRUN echo one\nENV A=1\nCMD python\n"
    env = envs.create(platform, workspace[0], "fine", text)
    drain(platform)
    shown = envs.show(platform, workspace[0], "fine")
    assert shown.status == "ready" and shown.build is not None
    assert (shown.build.step, shown.build.total_steps) == (4, 4)
    log = _log(platform, env.build_id)
    assert "STEP 3/4: ENV A=1" in log
    assert 'STEP (orch): LABEL "org.orch.kind"="environment"' in log
    assert "STEP 4/" not in log and "STEP 5/" not in log  # the label steps kept no number


def test_base_image_is_shown_for_a_build_and_a_cache_hit(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    text = "FROM e2bdev/code-interpreter:latest\nRUN echo one\n"
    queued = envs.create(platform, workspace[0], "first", text)
    assert queued.build is not None and queued.build.base_image is None  # not started yet
    drain(platform)
    base = base_images.image_tag("code-interpreter")
    first = envs.show(platform, workspace[0], "first")
    assert first.build is not None and first.build.base_image == base
    hit = envs.create(platform, workspace[0], "second", text)
    assert hit.cache == "hit" and hit.build is not None and hit.build.base_image == base


def test_a_base_image_built_on_the_way_is_marked_as_orchs(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    fake_engine.remove_image(base_images.image_tag("code-interpreter"))
    env = envs.create(platform, workspace[0], "first", "FROM e2bdev/code-interpreter:latest\nRUN echo one\n")
    drain(platform)
    log = _log(platform, env.build_id)
    assert "Building base image code-interpreter" in log
    assert "STEP (orch, base image): RUN " in log
    assert "STEP 2/2: RUN echo one" in log
