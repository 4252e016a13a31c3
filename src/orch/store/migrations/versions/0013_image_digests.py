"""Images travel through an OCI registry: a build's image and its environment's record the
digest reference the push returned (REPOSITORY@sha256:...), and base images pushed by
`orch admin build-images` are listed with theirs, so a machine without an image pulls it by
digest (docs/registry.md).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    for table in ("environments", "builds"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("image_digest", sa.String(255), nullable=True))
    op.create_table(
        "base_images",
        sa.Column("image", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, index=True),
        sa.Column("digest", sa.String(255), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("base_images")
    for table in ("builds", "environments"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("image_digest")
