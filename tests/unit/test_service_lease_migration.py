"""Migration 0016: services get a lease table and deployments an image digest; what was there
stays, and a downgrade takes the additions away again."""

from __future__ import annotations

from sqlalchemy import inspect, text

from orch.store import Store
from orch.store.schema import ServiceLeaseRow
from tests.unit.test_image_digest_migration import columns, differences, empty_store, to

__all__ = ["empty_store"]  # the fixture, on SQLite and on PostgreSQL


def a_service(store: Store, service_id: str = "svc_a") -> None:
    """A service (of a workspace made first, once); svc_a with a deployment of version 1."""
    with store.db.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM workspaces")).scalar() == 0:
            workspace = "INSERT INTO workspaces (id, name, created_at) VALUES ('ws', 't', CURRENT_TIMESTAMP)"
            conn.execute(text(workspace))
        conn.execute(
            text(
                "INSERT INTO services (id, workspace_id, name, desired, state, version, latest_version, "
                "command, manifest, restarts, last_output, created_at) VALUES (:id, 'ws', :id, "
                "'running', 'running', 1, 1, '[]', '{}', 0, '', CURRENT_TIMESTAMP)"
            ),
            {"id": service_id},
        )
        if service_id != "svc_a":
            return
        conn.execute(
            text(
                "INSERT INTO service_deployments (id, service_id, version, status, bundle_sha256, "
                "command, manifest, deps_files, image, log_tail, queued_at) VALUES ('dep_a', 'svc_a', "
                "1, 'ready', 'x', '[]', '{}', '[]', 'localhost/orch-svc/x:web-v1', '', CURRENT_TIMESTAMP)"
            )
        )


def test_the_lease_table_and_digest_come_and_go_and_rows_stay(empty_store: Store) -> None:
    store = empty_store
    to(store, "0015")
    a_service(store)
    to(store, "0016")
    assert columns(store, "service_leases") == set(ServiceLeaseRow.__table__.columns.keys())
    assert "image_digest" in columns(store, "service_deployments")
    with store.db.begin() as conn:
        row = conn.execute(text("SELECT image, image_digest FROM service_deployments")).one()
        assert tuple(row) == ("localhost/orch-svc/x:web-v1", None)  # built before: no digest
        conn.execute(
            text("INSERT INTO service_leases (service_id, holder, expires_at) VALUES ('svc_a', 'me', :t)"),
            {"t": "2026-12-02 00:00:00+00"},
        )
    with store.db.begin() as conn:  # a service's lease goes with it
        conn.execute(text("DELETE FROM service_deployments"))
        conn.execute(text("DELETE FROM services"))
        assert conn.execute(text("SELECT count(*) FROM service_leases")).scalar() == 0
    a_service(store, "svc_b")
    to(store, "0015", down=True)
    assert "service_leases" not in inspect(store.db).get_table_names()
    assert "image_digest" not in columns(store, "service_deployments")
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT id FROM services")).scalar() == "svc_b"


def test_the_migrated_tables_match_the_row_classes(empty_store: Store) -> None:
    mine = differences(empty_store, "service_leases", "service_deployments")
    assert not mine, mine
