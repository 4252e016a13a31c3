"""A store migrated by a newer orch, opened by an older one (found by a tester going back after
an upgrade): one sentence saying so and what to do, exit 2, not "This is a bug" with Alembic's
"Can't locate revision"; and a start that migrates the store says so in the server's log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from orch.cli.main import app
from orch.errors import InvalidInput
from orch.store import Store


def newer(path: Path) -> str:
    """A SQLite store at a revision this orch does not know, as a newer orch leaves it; its URL."""
    url = f"sqlite:///{path}"
    store = Store(url)
    store.migrate()
    with store.db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    store.dispose()
    return url


def test_a_store_of_a_newer_orch_is_said_as_such(tmp_path: Path) -> None:
    store = Store(newer(tmp_path / "orch.db"))
    try:
        with pytest.raises(InvalidInput) as said:
            store.migrate()
    finally:
        store.dispose()
    assert "was migrated by a newer orch" in said.value.message and "0999" in said.value.message
    assert "restore the database" in said.value.fix


def test_the_server_on_a_store_of_a_newer_orch_exits_2_with_the_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = newer(tmp_path / "db" / "orch.db") if (tmp_path / "db").mkdir() is None else ""
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(app, ["server", "--port", "0", "--services-port", "0", "--db", url])
    assert res.exit_code == 2, res.output
    assert "was migrated by a newer orch" in res.output and "bug" not in res.output, res.output


def test_a_migration_is_said_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    try:
        with caplog.at_level(logging.INFO, logger="orch.store.db"):
            store.migrate()
            store.migrate()  # at the newest already: nothing to say
    finally:
        store.dispose()
    said = [r.getMessage() for r in caplog.records if r.name == "orch.store.db"]
    assert len(said) == 2 and said[0].startswith("migrating the store from nothing to revision"), said
    assert said[1].startswith("migrated the store to revision"), said
