"""The CLI's consoles: a terminal's width for a terminal, whole rows for a pipe."""

from __future__ import annotations

import pytest
from rich.table import Table

from orch.cli import output


def test_piped_output_is_not_cut_at_80_columns(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("COLUMNS", raising=False)
    console = output._console()  # pytest's captured stdout is no terminal
    assert not console.is_terminal
    table = Table(box=None)
    for col in ("NAME", "DESCRIPTION"):
        table.add_column(col, no_wrap=True)
    name, description = "n" * 70, "d" * 90
    table.add_row(name, description)
    console.print(table)
    out = capsys.readouterr().out
    assert name in out and description in out and "…" not in out


def test_columns_still_wins_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    assert output._console().width == 50
