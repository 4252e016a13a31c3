"""Migrations 0015, 0018 and 0019: a table of cluster nodes, and the node that took a run or a build; what was
there stays, and a downgrade takes the additions away again."""

from __future__ import annotations

from sqlalchemy import inspect, text

from orch.store import Store
from orch.store.schema import NodeRow
from tests.unit.test_image_digest_migration import columns, differences, empty_store, to

__all__ = ["empty_store"]  # the fixture, on SQLite and on PostgreSQL

A_NODE = text(
    "INSERT INTO nodes (id, instance, address, state, cpus, memory, slots, started_at, seen_at) "
    "VALUES ('a', 'abc', '127.0.0.1', 'up', 2, 1024, 4, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


def a_node(store: Store) -> None:
    with store.db.begin() as conn:
        conn.execute(A_NODE)


def test_the_nodes_come_and_go_and_rows_stay(empty_store: Store) -> None:
    store = empty_store
    to(store, "0014")
    with store.db.begin() as conn:
        conn.execute(
            text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws', 't', CURRENT_TIMESTAMP)")
        )
        conn.execute(
            text(
                "INSERT INTO runs (id, workspace_id, agent_id, agent_version_id, status, input, env, deps, "
                "cancel_requested, attempts, queued_at, truncated) VALUES ('run_a', 'ws', 'ag', 'v', "
                "'succeeded', '', '{}', 'none', false, 1, CURRENT_TIMESTAMP, false)"
            )
        )
    to(store, "0015")
    assert columns(store, "nodes") == set(NodeRow.__table__.columns.keys()) - {"proxy", "memory_budget"}
    assert "node" in columns(store, "runs") and "node" in columns(store, "builds")
    with store.db.begin() as conn:
        assert conn.execute(text("SELECT status, node FROM runs")).one() == ("succeeded", None)
        conn.execute(A_NODE)
        assert conn.execute(text("SELECT running, images FROM nodes")).one() == (0, "[]")
    to(store, "0014", down=True)
    assert "nodes" not in inspect(store.db).get_table_names()
    assert "node" not in columns(store, "runs") and "node" not in columns(store, "builds")
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT id FROM runs")).scalar() == "run_a"


def test_a_node_s_proxy_comes_and_goes_and_rows_stay(empty_store: Store) -> None:
    """Migration 0018: where each node serves its services (its proxy)."""
    store = empty_store
    to(store, "0017")
    a_node(store)
    to(store, "0018")
    assert columns(store, "nodes") == set(NodeRow.__table__.columns.keys()) - {"memory_budget"}  # 0019's
    with store.db.begin() as conn:
        assert conn.execute(text("SELECT id, proxy FROM nodes")).one() == ("a", None)
        conn.execute(text("UPDATE nodes SET proxy = '127.0.0.1:41000'"))
    to(store, "0017", down=True)
    assert "proxy" not in columns(store, "nodes")
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT id FROM nodes")).scalar() == "a"


def test_a_node_s_memory_budget_comes_and_goes_and_rows_stay(empty_store: Store) -> None:
    """Migration 0019: each node's memory budget for sandboxes (its run_memory), for placing
    sandboxes on demand; a node from before says none."""
    store = empty_store
    to(store, "0018")
    a_node(store)
    to(store, "0019")
    assert columns(store, "nodes") == set(NodeRow.__table__.columns.keys())
    with store.db.begin() as conn:
        assert conn.execute(text("SELECT id, memory_budget FROM nodes")).one() == ("a", None)
        conn.execute(text("UPDATE nodes SET memory_budget = 12884901888"))  # 12 GiB: past 32 bits
        assert conn.execute(text("SELECT memory_budget FROM nodes")).scalar() == 12884901888
    to(store, "0018", down=True)
    assert "memory_budget" not in columns(store, "nodes")
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT id FROM nodes")).scalar() == "a"


def test_the_migrated_tables_match_the_row_classes(empty_store: Store) -> None:
    mine = differences(empty_store, "'nodes'", "'runs'", "'builds'", "node")
    assert not mine, mine
