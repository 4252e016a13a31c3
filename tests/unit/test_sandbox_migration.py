"""Migration 0010: the sandboxes table is what SandboxRow declares, and goes again on downgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from orch.store import Store
from orch.store.db import MIGRATIONS
from orch.store.schema import Base, SandboxRow


def test_the_table_matches_the_row_class_and_downgrades(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    store.migrate()
    with store.db.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not [d for d in diff if "sandboxes" in repr(d)], diff
    found = inspect(store.db)
    assert {c["name"] for c in found.get_columns("sandboxes")} == set(SandboxRow.__table__.columns.keys())
    assert [f["referred_table"] for f in found.get_foreign_keys("sandboxes")] == ["workspaces"]
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    assert "sandboxes" not in inspect(store.db).get_table_names()
    store.dispose()
