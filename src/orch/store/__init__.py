"""The store: schema, migrations and queries. SQLite by default, PostgreSQL by URL."""

from orch.store.db import Store

__all__ = ["Store"]
