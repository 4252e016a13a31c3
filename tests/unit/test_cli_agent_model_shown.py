"""A managed loop's model name is the author's text: one published before control characters
were refused (docs/loop.md) is shown on a terminal as a run's output is, `cat -v` style, never
written raw (found by a tester: `orch agents list` cleared the screen of whoever listed agents)."""

from __future__ import annotations

import pytest
from rich.console import Console

from orch.cli import agent

VERSION = {"manifest": {"loop": {"model": "x\x1b[2J\x1b]0;pwned\x07", "provider": "openai"}}}


def test_a_model_name_with_control_characters_is_shown_not_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "console", Console(force_terminal=True))
    assert agent._program(VERSION) == "loop (x^[[2J^[]0;pwned^G via openai)"


def test_piped_it_goes_as_it_came(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "console", Console(force_terminal=False))
    assert agent._program(VERSION) == "loop (x\x1b[2J\x1b]0;pwned\x07 via openai)"
