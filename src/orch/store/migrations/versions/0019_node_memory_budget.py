"""A node's memory budget for sandboxes (docs/scale.md): its `run_memory`, so that a sandbox on
demand is placed on a node whose sandboxes on demand leave room for it.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("memory_budget", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("memory_budget")
