"""A stop during a deployment sticks: the deployment records that its service was stopped while
it was under way, and ends with its version current and the service still stopped (it set the
service running at its switch, undoing the stop; docs/services.md).

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"


def upgrade() -> None:
    with op.batch_alter_table("service_deployments") as batch:
        batch.add_column(sa.Column("stop_requested", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("service_deployments") as batch:
        batch.drop_column("stop_requested")
