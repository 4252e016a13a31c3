"""Agents and versions can be deleted: an agent keeps the last version number it gave, so that
deleting its latest version never lets the next publish give that number again.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("last_published", sa.Integer, nullable=False, server_default="0"))
    # Until now no version could be deleted: the latest is the last number given.
    op.execute("UPDATE agents SET last_published = latest_version")
