"""An agent version's entrypoint is text of any length: a bundle path can exceed 255 characters.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    # SQLite never enforced VARCHAR(255) (its columns have TEXT affinity), so only PostgreSQL,
    # which refused longer paths, needs the change; rebuilding the SQLite table would gain nothing.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("agent_versions", "entrypoint", type_=sa.Text, existing_type=sa.String(255))
