"""A build's output and its Dockerfile's text on a terminal: every `orch env` command that prints
them shows their control sequences as `orch env logs` does (cli/terminal_text.py, docs/cli.md),
and `orch service deploy` the excerpt of a failed build; piped, they pass as they came."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from typer.testing import Result

from orch.cli import env as env_cli
from orch.cli import service as service_cli
from orch.engine.fake import FakeEngine
from orch.errors import BuildFailed
from orch.services import build_output
from orch.services.platform import Platform
from orch.store.schema import BuildRow
from tests.api.test_build_logs import cli  # noqa: F401 - fixture
from tests.api.test_services import work
from tests.conftest import drain

# A title change, a screen clear and a C1 CSI, as a build step printed them.
HOSTILE = ["\x1b]0;PWNED\x07 title", "\x1b[2J CLEARED", "\x9b6n c1"]
SHOWN = ["^[]0;PWNED^G title", "^[[2J CLEARED", "\\x9b6n c1"]
RAW = ("\x1b[2J", "\x1b]0;", "\x9b")  # what a terminal would obey
# The Dockerfile's own RUN text holds a screen clear too (validation lets it through).
DOCKERFILE = 'FROM e2bdev/code-interpreter:latest\nRUN echo "\x1b[2J step" && exit 1\n'


@pytest.fixture
def hostile_build(fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake engine's builds print HOSTILE after each step."""
    real = fake_engine.build

    def build(request, on_output, on_start=None, should_stop=None):  # type: ignore[no-untyped-def]
        def output(line: str) -> None:
            on_output(line)
            if line.startswith("STEP"):
                for hostile in HOSTILE:
                    on_output(hostile)

        return real(request, output, on_start, should_stop)

    monkeypatch.setattr(fake_engine, "build", build)


def _safe(res: Result) -> None:
    for raw in RAW:
        assert raw not in res.output, (raw, res.output)
    for shown in SHOWN:
        assert shown in res.output, (shown, res.output)


def test_a_builds_output_is_shown_not_obeyed_on_a_terminal(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    api: httpx.Client,
    platform: Platform,
    hostile_build: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`env logs` showed them; `env create --logs`, `env build --logs`, `env status [--follow]`
    and the failure excerpt wrote a screen clear and a title change to the terminal raw."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    monkeypatch.setattr(env_cli.time, "sleep", lambda _s: drain(platform))  # the build runs then
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stdout and stderr are terminals, as rich sees it
    for args in (
        ("env", "create", "-f", str(dockerfile), "-n", "esc", "--logs"),  # streamed, then the excerpt
        ("env", "build", "esc", "--no-cache", "--logs"),
        ("env", "status", "esc"),  # the failure excerpt
        ("env", "status", "esc", "--follow"),  # the whole log, then the excerpt
        ("env", "logs", "esc"),
    ):
        res = cli(*args)
        assert res.exit_code == (0 if args[1] == "logs" else 1), res.output
        _safe(res)
        if args[1] != "logs":
            assert "failed (exit code 1)" in res.output and "^[[2J step" in res.output  # the step
    monkeypatch.delenv("TTY_COMPATIBLE")
    piped = cli("env", "status", "esc")  # as the build wrote it
    assert piped.exit_code == 1 and all(raw in piped.output for raw in RAW), piped.output


def test_the_last_lines_and_the_step_of_a_build_under_way_are_shown_not_obeyed(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    api: httpx.Client,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`orch env status` while it builds: "progress step 2/2  RUN ..." and the last lines."""
    api.post("/v1/environments", json={"name": "going", "dockerfile": DOCKERFILE})
    build_id = api.get("/v1/environments/going").json()["build_id"]
    with platform.store.session() as s:
        s.execute(
            update(BuildRow)
            .where(BuildRow.id == build_id)
            .values(status="building", step=2, total_steps=2, step_text='RUN echo "\x1b[2J step"')
        )
        build_output.note(s, build_id, "".join(f"{line}\n" for line in HOSTILE))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    res = cli("env", "status", "going")
    assert res.exit_code == 0, res.output
    _safe(res)
    assert 'progress step 2/2  RUN echo "^[[2J step"' in res.output
    assert "last lines of the log:" in res.output
    monkeypatch.delenv("TTY_COMPATIBLE")
    piped = cli("env", "status", "going")
    assert piped.exit_code == 0 and all(raw in piped.output for raw in RAW), piped.output


def test_a_service_builds_output_is_shown_not_obeyed_on_a_terminal(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`orch service deploy` printed a failed build's excerpt, and the error, raw."""

    def build(request, on_output, on_start=None, should_stop=None):  # type: ignore[no-untyped-def]
        for hostile in HOSTILE:
            on_output(hostile)
        raise BuildFailed("podman build failed: \x1b[2J.", "See the build log.", exit_code=1)

    monkeypatch.setattr(fake_engine, "build", build)
    monkeypatch.setattr(service_cli.time, "sleep", lambda _s: work(platform))  # it deploys then
    root = tmp_path / "web"
    root.mkdir()
    (root / "main.py").write_text("")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    res = cli("service", "deploy", str(root))
    assert res.exit_code == 1, res.output
    _safe(res)
    assert "Building v1 failed: podman build failed: ^[[2J." in res.output


def test_publish_dockers_failed_build_is_shown_not_obeyed_on_a_terminal(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`orch publish --docker` quotes the failed build's error, which names the Dockerfile's
    step: its screen clear reached the terminal raw."""
    agent = tmp_path / "esc-agent"
    agent.mkdir()
    (agent / "main.py").write_text("print('hi')\n")
    (agent / "Dockerfile").write_text(DOCKERFILE)
    monkeypatch.setattr(env_cli.time, "sleep", lambda _s: drain(platform))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    res = cli("publish", str(agent), "--docker", "--name", "esc-agent")
    assert res.exit_code == 1, res.output
    assert "failed to build" in res.output and "^[[2J step" in res.output, res.output
    assert "\x1b[2J" not in res.output, res.output
