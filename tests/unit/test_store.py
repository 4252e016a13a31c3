from __future__ import annotations

from pathlib import Path

import pytest

from orch.errors import InvalidInput
from orch.store import Store


def test_postgresql_urls_use_psycopg() -> None:
    store = Store("postgresql://orch:secret@127.0.0.1:5432/orch")
    assert store.engine.dialect.name == "postgresql"
    assert store.engine.dialect.driver == "psycopg"


def test_bad_url_is_a_plain_error() -> None:
    with pytest.raises(InvalidInput, match="not usable"):
        Store("nosuchdb://x")


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'deep' / 'orch.db'}")
    store.migrate()
    store.migrate()
    with store.engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert version == "0003" and mode == "wal"
    store.dispose()
