"""Services' output moves into the store, so any server answers for any service wherever its
containers run: each container still writes its own log file (conmon's, on the machine that runs
it), and the service's supervisor stores what is new in it at each pass (service_log), minding
how far it has read each file (service_log_cursors). The history that earlier servers kept under
ORCH_HOME (logs/services/SERVICE/history.log) is moved in at the next start
(services/deployed_logs.py).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"


def upgrade() -> None:
    op.create_table(
        "service_log",
        sa.Column(
            "service_id", sa.String(40), sa.ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("start", sa.BigInteger, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "service_log_cursors",
        sa.Column("container", sa.String(128), primary_key=True),
        sa.Column(
            "service_id",
            sa.String(40),
            sa.ForeignKey("services.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("read", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_log_cursors")
    op.drop_table("service_log")
