"""Workspaces, tokens, environments and builds.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("default_environment_id", sa.String(40)),
        sa.Column("created_at", tz, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "workspace_id",
            sa.String(32),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", tz, nullable=False),
    )
    op.create_table(
        "environments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("scope", sa.String(32), nullable=False, index=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("dockerfile", sa.Text),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("image", sa.String(255)),
        sa.Column("build_id", sa.String(40)),
        sa.Column("created_at", tz, nullable=False),
        sa.UniqueConstraint("scope", "name", name="uq_environment_scope_name"),
    )
    op.create_table(
        "builds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("environment_id", sa.String(40), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("cache", sa.String(8), nullable=False),
        sa.Column("cache_reason", sa.Text, nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False, index=True),
        sa.Column("dockerfile_hash", sa.String(64), nullable=False, index=True),
        sa.Column("containerfile", sa.Text, nullable=False),
        sa.Column("no_cache", sa.Boolean, nullable=False),
        sa.Column("image", sa.String(255)),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("step_text", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("failed_step", sa.Text),
        sa.Column("log_tail", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker_pid", sa.Integer),
        sa.Column("queued_at", tz, nullable=False),
        sa.Column("started_at", tz),
        sa.Column("finished_at", tz),
    )
