"""A node's services proxy (docs/scale.md): where each node serves the services it holds to the
cluster's servers, HOST:PORT on its cluster address.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("proxy", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("proxy")
