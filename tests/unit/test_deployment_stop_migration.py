"""Migration 0020: a deployment records a stop of its service while it was under way (a stop
during a deploy sticks, docs/services.md); existing deployments had none, and a downgrade takes
the column away again."""

from __future__ import annotations

from sqlalchemy import text

from orch.store import Store
from tests.unit.test_image_digest_migration import columns, differences, to
from tests.unit.test_image_digest_migration import empty_store as empty_store  # a fixture


def test_the_stop_flag_comes_and_goes_and_deployments_stay(empty_store: Store) -> None:
    store = empty_store
    to(store, "0019")
    with store.db.begin() as conn:
        conn.execute(
            text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_a', 'a', CURRENT_TIMESTAMP)")
        )
        conn.execute(
            text(
                "INSERT INTO services (id, workspace_id, name, desired, state, version, latest_version, "
                "command, manifest, restarts, last_output, created_at) VALUES ('svc_a', 'ws_a', 'web', "
                "'running', 'deploying', 0, 1, '[]', '{}', 0, '', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO service_deployments (id, service_id, version, status, bundle_sha256, "
                "command, manifest, deps_files, log_tail, queued_at) VALUES ('dep_a', 'svc_a', 1, "
                "'building', 'x', '[]', '{}', '[]', '', CURRENT_TIMESTAMP)"
            )
        )
    to(store, "0020")
    with store.db.connect() as conn:
        row = conn.execute(text("SELECT status, stop_requested FROM service_deployments")).one()
    assert (row[0], bool(row[1])) == ("building", False)  # under way, and not stopped
    assert differences(store, "service_deployments") == []
    to(store, "0019", down=True)
    assert "stop_requested" not in columns(store, "service_deployments")
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT status FROM service_deployments")).scalar() == "building"
