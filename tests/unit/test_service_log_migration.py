"""Migration 0017: services' output gets its tables in the store; a service's pieces and
cursors go with it, and a downgrade takes the tables away again."""

from __future__ import annotations

from sqlalchemy import inspect, text

from orch.store import Store
from orch.store.schema import ServiceLogCursorRow, ServiceLogRow
from tests.unit.test_image_digest_migration import columns, differences, empty_store, to
from tests.unit.test_service_lease_migration import a_service

__all__ = ["empty_store"]  # the fixture, on SQLite and on PostgreSQL


def test_the_log_tables_come_and_go_and_go_with_their_service(empty_store: Store) -> None:
    store = empty_store
    to(store, "0016")
    a_service(store, "svc_b")
    to(store, "0017")
    assert columns(store, "service_log") == set(ServiceLogRow.__table__.columns.keys())
    assert columns(store, "service_log_cursors") == set(ServiceLogCursorRow.__table__.columns.keys())
    with store.db.begin() as conn:
        conn.execute(
            text("INSERT INTO service_log (service_id, start, data) VALUES ('svc_b', 0, :d)"), {"d": b"x\n"}
        )
        conn.execute(
            text("INSERT INTO service_log_cursors (container, service_id, read) VALUES ('c', 'svc_b', 9)")
        )
    with store.db.begin() as conn:
        conn.execute(text("DELETE FROM services"))
        assert conn.execute(text("SELECT count(*) FROM service_log")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM service_log_cursors")).scalar() == 0
    a_service(store, "svc_c")
    to(store, "0016", down=True)
    tables = inspect(store.db).get_table_names()
    assert "service_log" not in tables and "service_log_cursors" not in tables
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT id FROM services")).scalar() == "svc_c"


def test_the_migrated_tables_match_the_row_classes(empty_store: Store) -> None:
    mine = differences(empty_store, "service_log")
    assert not mine, mine
