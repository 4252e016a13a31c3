"""Migration 0014: runs' output, builds' logs and bundles move into the store; what was there stays (a run
gets `truncated` false), and a downgrade takes the additions away again."""

from __future__ import annotations

from sqlalchemy import inspect, text

from orch.store import Store
from orch.store.schema import BuildLogRow, BundleRow, RunOutputRow
from tests.unit.test_image_digest_migration import columns, differences, empty_store, to

__all__ = ["empty_store"]  # the fixture, on SQLite and on PostgreSQL

PLAIN = {"BOOL": False, "INT": 0, "TIME": "2026-12-02 00:00:00+00"}  # by column type; else "x"


def a_run(store: Store) -> None:
    """A run (of a workspace made first), every required column given a plain value."""
    with store.db.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM workspaces")).scalar() == 0:
            conn.execute(
                text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws', 't', CURRENT_TIMESTAMP)")
            )
        required = [
            c
            for c in inspect(conn).get_columns("runs")
            if not c["nullable"] and c["default"] is None and c["name"] not in ("id", "workspace_id")
        ]
        values: dict[str, object] = {"id": "run_a", "workspace_id": "ws"}
        for c in required:
            kind = str(c["type"]).upper()
            values[c["name"]] = next((v for k, v in PLAIN.items() if k in kind), "x")
        places = ", ".join(":" + n for n in values)
        conn.execute(text(f"INSERT INTO runs ({', '.join(values)}) VALUES ({places})"), values)


def test_the_tables_come_and_go_and_runs_stay(empty_store: Store) -> None:
    store = empty_store
    to(store, "0013")
    a_run(store)
    to(store, "0014")
    assert columns(store, "run_output") == set(RunOutputRow.__table__.columns.keys())
    assert columns(store, "bundles") == set(BundleRow.__table__.columns.keys())
    assert columns(store, "build_log") == set(BuildLogRow.__table__.columns.keys())
    with store.db.begin() as conn:
        assert conn.execute(text("SELECT truncated FROM runs WHERE id = 'run_a'")).scalar() in (False, 0)
        piece = text("INSERT INTO run_output (run_id, stream, start, data) VALUES ('run_a', 'log', 0, :d)")
        conn.execute(piece, {"d": b"hi\n"})
    with store.db.begin() as conn:  # a run's output goes with it
        conn.execute(text("DELETE FROM runs"))
        assert conn.execute(text("SELECT count(*) FROM run_output")).scalar() == 0
    a_run(store)
    to(store, "0013", down=True)
    assert "truncated" not in columns(store, "runs")
    assert not {"run_output", "bundles", "build_log"} & set(inspect(store.db).get_table_names())
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT id FROM runs")).scalar() == "run_a"


def test_the_migrated_tables_match_the_row_classes(empty_store: Store) -> None:
    mine = differences(empty_store, "run_output", "bundles", "build_log", "truncated")
    assert not mine, mine
