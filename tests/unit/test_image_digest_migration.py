"""Migration 0013: environments and builds get a nullable image_digest, base images a table of
their digests; what was there stays, and a downgrade takes the additions away again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from orch.store import Store
from orch.store.db import MIGRATIONS
from orch.store.schema import Base, BaseImageRow
from tests.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store with no schema at all, on SQLite or on an empty PostgreSQL database."""
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
        yield store
        store.dispose()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database(template="template0")
    store = Store(server.url(name))
    yield store
    store.dispose()
    server.drop_database(name)


def to(store: Store, revision: str, down: bool = False) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.db.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def differences(store: Store, *names: str) -> list[object]:
    """Where the migrated schema of `store` differs from the row classes, in what names `names`."""
    store.migrate()
    with store.db.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [d for d in diff if any(n in repr(d) for n in names)]


def columns(store: Store, table: str) -> set[str]:
    return {c["name"] for c in inspect(store.db).get_columns(table)}


def test_the_digests_come_and_go_and_rows_stay(empty_store: Store) -> None:
    store = empty_store
    to(store, "0012")
    with store.db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO environments (id, scope, name, kind, description, image, created_at) "
                "VALUES ('env_a', 'ws', 'a', 'custom', '', 'localhost/orch-env/x:k', CURRENT_TIMESTAMP)"
            )
        )
    to(store, "0013")
    assert "image_digest" in columns(store, "environments")
    assert "image_digest" in columns(store, "builds")
    assert columns(store, "base_images") == set(BaseImageRow.__table__.columns.keys())
    with store.db.connect() as conn:
        row = conn.execute(text("SELECT image, image_digest FROM environments WHERE id = 'env_a'")).one()
    assert tuple(row) == ("localhost/orch-env/x:k", None)  # built before: no digest, still there
    to(store, "0012", down=True)
    assert "image_digest" not in columns(store, "environments")
    assert "image_digest" not in columns(store, "builds")
    assert "base_images" not in inspect(store.db).get_table_names()
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT image FROM environments")).scalar() == "localhost/orch-env/x:k"


def test_the_migrated_tables_match_the_row_classes(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    mine = differences(store, "base_images", "image_digest")
    assert not mine, mine
    assert [i["column_names"] for i in inspect(store.db).get_indexes("base_images")] == [["name"]]
    store.dispose()
