"""Which platform (its instance) claimed a build, run or deployment: a server starting on a
shared database settles only what it had itself left in flight, never another live server's.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    for table in ("builds", "runs", "service_deployments"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_by", sa.String(32), nullable=True))
