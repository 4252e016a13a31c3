"""Runs record the isolation runtime their sandbox ran under (runc or gvisor).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("isolation", sa.String(16), nullable=True))
    # Every run before this one ran under runc (through Podman).
    op.execute("UPDATE runs SET isolation = 'runc' WHERE started_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("isolation")
