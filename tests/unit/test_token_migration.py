"""Migration 0004: tokens get an admin flag; the operator's existing tokens keep their rights."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from orch.store import Store
from orch.store.db import MIGRATIONS


def test_admin_named_and_operator_cli_tokens_become_admin(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    now = datetime.now(UTC)
    with store.db.begin() as conn:
        for ws_id, name in (("ws_default", "default"), ("ws_team", "team")):
            conn.execute(
                text("INSERT INTO workspaces (id, name, created_at) VALUES (:id, :name, :at)"),
                {"id": ws_id, "name": name, "at": now},
            )
        for token_id, ws_id, name in (
            ("tok_1", "ws_default", "admin"),
            ("tok_2", "ws_default", "cli"),
            ("tok_3", "ws_team", "admin"),
            ("tok_4", "ws_team", "cli"),
            ("tok_5", "ws_team", "ci"),
        ):
            conn.execute(
                text(
                    "INSERT INTO tokens (id, workspace_id, name, sha256, created_at) "
                    "VALUES (:id, :ws, :name, :sha, :at)"
                ),
                {"id": token_id, "ws": ws_id, "name": name, "sha": token_id * 8, "at": now},
            )
    store.migrate()
    with store.db.connect() as conn:
        flags = {row[0]: row[1] for row in conn.execute(text("SELECT id, admin FROM tokens"))}
    assert {k: bool(v) for k, v in flags.items()} == {
        "tok_1": True,
        "tok_2": True,
        "tok_3": True,
        "tok_4": False,
        "tok_5": False,
    }
    store.dispose()
