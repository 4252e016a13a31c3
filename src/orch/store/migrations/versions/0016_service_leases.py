"""Services on more than one server of a store: each service has a lease (which platform
supervises it, and until when) that its holder renews and another takes over once it expires
(services/leases.py); a deployment records the registry digest of the image it built, so a
machine that lacks the image pulls it (docs/registry.md).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    op.create_table(
        "service_leases",
        sa.Column(
            "service_id",
            sa.String(40),
            sa.ForeignKey("services.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("holder", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("service_deployments") as batch:
        batch.add_column(sa.Column("image_digest", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("service_deployments") as batch:
        batch.drop_column("image_digest")
    op.drop_table("service_leases")
