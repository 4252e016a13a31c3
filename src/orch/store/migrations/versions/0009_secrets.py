"""Workspace secrets: a name and its value, encrypted with a key kept outside the database.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "secrets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "workspace_id",
            sa.String(32),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("updated_at", tz, nullable=False),
        sa.UniqueConstraint("workspace_id", "name", name="uq_secret_workspace_name"),
    )


def downgrade() -> None:
    op.drop_table("secrets")
