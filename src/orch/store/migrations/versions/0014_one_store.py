"""Runs' output, builds' logs and the bundles move into the store, so any machine of it can run
any agent and any server answers for any run or build: a run's streams (stdout, stderr, log) and
a build's log as pieces from a byte offset, whether a run's stream was cut at its bound, and
each bundle once by content. What earlier servers kept under ORCH_HOME (logs/runs, logs/builds,
bundles/*.tar.gz) is moved in at the next start (services/run_output.py, build_output.py,
bundles.py).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.create_table(
        "run_output",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stream", sa.String(8), primary_key=True),
        sa.Column("start", sa.BigInteger, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "build_log",
        sa.Column(
            "build_id", sa.String(40), sa.ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("start", sa.BigInteger, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "bundles",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("bundles")
    op.drop_table("build_log")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("truncated")
    op.drop_table("run_output")
