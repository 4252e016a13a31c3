"""Always-on services and their deployments.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "services",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "workspace_id",
            sa.String(32),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("desired", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("image", sa.String(255)),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("run_command", sa.Text),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("container", sa.String(128)),
        sa.Column("address", sa.String(64)),
        sa.Column("restarts", sa.Integer, nullable=False),
        sa.Column("quick_crashes", sa.Integer, nullable=False),
        sa.Column("next_start_at", tz),
        sa.Column("started_at", tz),
        sa.Column("last_exit", sa.Integer),
        sa.Column("last_output", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", tz, nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_service_workspace_name"),
    )
    op.create_table(
        "service_deployments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "service_id",
            sa.String(40),
            sa.ForeignKey("services.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("run_command", sa.Text),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("deps_files", sa.Text, nullable=False),
        sa.Column("image", sa.String(255)),
        sa.Column("container", sa.String(128)),
        sa.Column("error", sa.Text),
        sa.Column("log_tail", sa.Text, nullable=False),
        sa.Column("queued_at", tz, nullable=False),
        sa.Column("finished_at", tz),
        sa.UniqueConstraint("service_id", "version", name="uq_service_deployment_version"),
    )
