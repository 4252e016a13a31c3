"""`orch service logs -f` ends with 0 on Ctrl-C, whatever a second Ctrl-C a moment later does
(`timeout -s INT` signals the command, then its process group), as `orch env logs -f` does."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from typer.testing import CliRunner

from orch.cli import service as service_cli
from orch.cli.main import app
from orch.cli.terminal_text import TerminalText


class Interrupted:
    """A server whose long poll is cut by Ctrl-C."""

    def get(self, path: str, **_kw: Any) -> dict[str, Any]:
        os.kill(os.getpid(), signal.SIGINT)
        return {"text": "line\n", "offset": 5}


def test_a_second_ctrl_c_while_service_logs_f_ends_still_exits_0(
    monkeypatch: pytest.MonkeyPatch, sigint: None
) -> None:
    monkeypatch.setattr(service_cli.Transport, "from_settings", staticmethod(Interrupted))
    real_end = TerminalText.end

    def end(self: TerminalText) -> None:  # the second one, as the first is handled
        os.kill(os.getpid(), signal.SIGINT)
        real_end(self)

    monkeypatch.setattr(TerminalText, "end", end)
    res = CliRunner().invoke(app, ["service", "logs", "web", "-f"])
    assert res.exit_code == 0, res.output
    assert "Interrupted" not in res.output
