"""Agents, their immutable versions, and runs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "agents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "workspace_id",
            sa.String(32),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_agent_workspace_name"),
    )
    op.create_table(
        "agent_versions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "agent_id",
            sa.String(40),
            sa.ForeignKey("agents.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("bundle_size", sa.BigInteger, nullable=False),
        sa.Column("entrypoint", sa.String(255), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("pinned_environment", sa.String(63)),
        sa.Column("dockerfile_environment_id", sa.String(40), index=True),
        sa.Column("deps_files", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.UniqueConstraint("agent_id", "version", name="uq_agent_version"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "workspace_id",
            sa.String(32),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("agent_id", sa.String(40), nullable=False, index=True),
        sa.Column("agent_version_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("env", sa.Text, nullable=False),
        sa.Column("timeout", sa.Integer),
        sa.Column("environment_id", sa.String(40)),
        sa.Column("environment_name", sa.String(63)),
        sa.Column("environment_rule", sa.String(32)),
        sa.Column("image", sa.String(255)),
        sa.Column("deps", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("container", sa.String(128)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("queued_at", tz, nullable=False),
        sa.Column("started_at", tz),
        sa.Column("finished_at", tz),
    )
