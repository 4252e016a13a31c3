"""Nodes of a cluster (docs/scale.md): each machine that joins as an orch node has a row (its
address, capacity, what it runs now and which images it holds, when it was last seen), and a
run or a build records the node that took it.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("instance", sa.String(32), nullable=False, unique=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("ray_node", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("running", sa.Integer, nullable=False, server_default="0"),
        sa.Column("images", sa.Text, nullable=False, server_default="[]"),
        sa.Column("started_at", tz, nullable=False),
        sa.Column("seen_at", tz, nullable=False),
    )
    for table in ("runs", "builds"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("node", sa.String(63), nullable=True))


def downgrade() -> None:
    for table in ("builds", "runs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("node")
    op.drop_table("nodes")
