"""Migration 0007: an existing agent's last given version number is its latest version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from orch.store import Store
from orch.store.db import MIGRATIONS


def test_existing_agents_keep_counting_from_their_latest_version(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
    now = datetime.now(UTC)
    with store.db.begin() as conn:
        conn.execute(
            text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_team', 'team', :at)"), {"at": now}
        )
        for agent_id, latest in (("agt_a", 1), ("agt_b", 7)):
            conn.execute(
                text(
                    "INSERT INTO agents (id, workspace_id, name, latest_version, created_at) "
                    "VALUES (:id, 'ws_team', :id, :latest, :at)"
                ),
                {"id": agent_id, "latest": latest, "at": now},
            )
    store.migrate()
    with store.db.connect() as conn:
        rows = {r[0]: r[1] for r in conn.execute(text("SELECT id, last_published FROM agents"))}
    assert rows == {"agt_a": 1, "agt_b": 7}
    store.dispose()
