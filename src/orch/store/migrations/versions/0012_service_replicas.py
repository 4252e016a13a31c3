"""Services run in replicas: a row per container (slot), supervised each on its own; what the
services table held of its one container moves to slot 0. A deployment of a bundle with a
Dockerfile records the environment built from it.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"

_MOVED = ("container", "address", "quick_crashes", "next_start_at", "started_at")


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "service_replicas",
        sa.Column(
            "service_id",
            sa.String(40),
            sa.ForeignKey("services.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("container", sa.String(128)),
        sa.Column("address", sa.String(64)),
        sa.Column("quick_crashes", sa.Integer, nullable=False),
        sa.Column("next_start_at", tz),
        sa.Column("started_at", tz),
    )
    # A service that has a version to run gets its one replica; the supervisor adopts its container.
    op.execute(
        "INSERT INTO service_replicas (service_id, slot, version, state, container, address, "
        "quick_crashes, next_start_at, started_at) "
        "SELECT id, 0, version, CASE WHEN state IN ('running', 'starting', 'restarting', "
        "'crash-looping') THEN state ELSE 'starting' END, container, address, quick_crashes, "
        "next_start_at, started_at FROM services WHERE version > 0 AND desired = 'running'"
    )
    with op.batch_alter_table("services") as batch:
        for column in _MOVED:
            batch.drop_column(column)
    with op.batch_alter_table("service_deployments") as batch:
        batch.add_column(sa.Column("environment_id", sa.String(40), nullable=True))


def downgrade() -> None:
    tz = sa.DateTime(timezone=True)
    with op.batch_alter_table("service_deployments") as batch:
        batch.drop_column("environment_id")
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("container", sa.String(128)))
        batch.add_column(sa.Column("address", sa.String(64)))
        batch.add_column(sa.Column("quick_crashes", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_start_at", tz))
        batch.add_column(sa.Column("started_at", tz))
    op.execute(
        "UPDATE services SET container = r.container, address = r.address, "
        "quick_crashes = r.quick_crashes, next_start_at = r.next_start_at, started_at = r.started_at "
        "FROM service_replicas r WHERE r.service_id = services.id AND r.slot = 0"
    )
    op.drop_table("service_replicas")
