"""Sandboxes on demand: held open by one server for a workspace, removed when idle or asked.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "workspace_id",
            sa.String(32),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("environment_id", sa.String(40), nullable=False),
        sa.Column("environment_name", sa.String(63), nullable=False),
        sa.Column("isolation", sa.String(16), nullable=False),
        sa.Column("image", sa.String(255), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("cpus", sa.Double, nullable=False),
        sa.Column("pids", sa.Integer, nullable=False),
        sa.Column("network", sa.Boolean, nullable=False),
        sa.Column("timeout", sa.Integer, nullable=False),
        sa.Column("container", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("last_used_at", tz, nullable=False),
        sa.Column("deadline", tz, nullable=False),
        sa.Column("removed_at", tz, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sandboxes")
