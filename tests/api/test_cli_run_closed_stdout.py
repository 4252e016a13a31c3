"""`orch run AGENT | head -1`: once standard output is closed, what the run writes has no reader,
so the run is cancelled, as for Ctrl-C, and said on stderr (`Cancelled run_…`), exit 141. It
exited 1 without a word and left the run going, unwatched, for its whole timeout. docs/cli.md."""

from __future__ import annotations

import errno
import io
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
from sqlalchemy import select
from typer.testing import Result

from orch.cli import run as run_cli
from orch.cli.terminal_text import TerminalText
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from orch.store.schema import RunRow
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli_runs import cli, worker  # noqa: F401 - fixtures


class HeadOne(io.TextIOBase):
    """Standard output piped to `head -1`: the first line is read, then the pipe is closed, and
    any write after it (the rest of a chunk too) fails as a write to a closed pipe does."""

    def __init__(self, under: IO[str]) -> None:
        self.under, self.closed_pipe = under, False

    def write(self, text: str) -> int:
        if self.closed_pipe:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        line, newline, rest = text.partition("\n")
        self.under.write(line + newline)
        self.closed_pipe = bool(newline)
        if rest and self.closed_pipe:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return len(text)

    def flush(self) -> None:
        self.under.flush()


def test_a_closed_stdout_cancels_the_run_and_says_so(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    worker: None,  # noqa: F811 - the fixture
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    gone = threading.Event()  # set once the test is done: the fake sandbox's command ends then

    def slow(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        out(b"tick 0\n")
        out(b"tick 1\n")
        gone.wait(30)
        return ContainerExit(0)

    fake_engine.behaviour = slow
    assert publish(api, "slow", bundle(tmp_path, {"main.py": ""})).status_code == 201

    def terminal_text(out: IO[str], terminal: bool) -> TerminalText:
        return TerminalText(HeadOne(out) if out is sys.stdout else out, terminal)

    monkeypatch.setattr(run_cli, "TerminalText", terminal_text)
    try:
        res = cli("run", "slow")
        run_id = re.search(r"→ (run_\w+)", res.stderr)
        assert run_id, res.stderr
        with platform.store.session() as s:
            asked = s.execute(select(RunRow.cancel_requested).where(RunRow.id == run_id[1])).scalar_one()
    finally:
        gone.set()
    assert res.exit_code == 141, res.output
    assert res.stdout == "tick 0\n"
    assert f"Cancelled {run_id[1]}: standard output was closed" in res.stderr, res.stderr
    assert asked  # the run was cancelled, not left going unwatched
