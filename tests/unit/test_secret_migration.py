"""Migration 0009: the secrets table is what SecretRow declares, and goes again on downgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from orch.store import Store
from orch.store.db import MIGRATIONS
from orch.store.schema import Base, SecretRow


def test_the_table_matches_the_row_class_and_downgrades(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    store.migrate()
    with store.db.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not [d for d in diff if "secrets" in repr(d)], diff
    found = inspect(store.db)
    assert {c["name"] for c in found.get_columns("secrets")} == set(SecretRow.__table__.columns.keys())
    assert [u["column_names"] for u in found.get_unique_constraints("secrets")] == [["workspace_id", "name"]]
    assert [f["referred_table"] for f in found.get_foreign_keys("secrets")] == ["workspaces"]
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    assert "secrets" not in inspect(store.db).get_table_names()
    store.dispose()
