"""Migration 0021: environments record the agent or service a publish made them for; of those made
before, the ones named as a publish names them count as a publish's (docs/agents.md), and a
downgrade takes the column away again."""

from __future__ import annotations

from sqlalchemy import text

from orch.store import Store
from tests.unit.test_image_digest_migration import columns, differences, to
from tests.unit.test_image_digest_migration import empty_store as empty_store  # a fixture

_NAMES = {
    "env_a": ("scraper-dockerfile", "custom"),
    "env_b": ("scraper-dockerfile-2", "custom"),
    "env_c": ("scraper-plus", "custom"),  # the user's (orch env create)
    "env_d": ("dockerfile", "custom"),
    "env_e": ("x-dockerfile-1", "custom"),  # a publish never gives -1
    "env_f": ("x-dockerfile-2b", "custom"),
    "env_g": ("my-dockerfile", "predefined"),
}


def test_the_origin_comes_and_goes_and_environments_stay(empty_store: Store) -> None:
    store = empty_store
    to(store, "0020")
    with store.db.begin() as conn:
        for env_id, (name, kind) in _NAMES.items():
            conn.execute(
                text(
                    "INSERT INTO environments (id, scope, name, kind, description, created_at) "
                    "VALUES (:id, 'ws', :name, :kind, '', CURRENT_TIMESTAMP)"
                ),
                {"id": env_id, "name": name, "kind": kind},
            )
    to(store, "0021")
    with store.db.connect() as conn:
        made = {r[0]: r[1] for r in conn.execute(text("SELECT id, made_for FROM environments"))}
    assert made == {
        "env_a": "scraper",
        "env_b": "scraper",
        "env_c": None,
        "env_d": None,
        "env_e": None,
        "env_f": None,
        "env_g": None,
    }
    assert differences(store, "environments") == []
    to(store, "0020", down=True)
    assert "made_for" not in columns(store, "environments")
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM environments")).scalar() == len(_NAMES)
