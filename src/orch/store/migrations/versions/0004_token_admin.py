"""Admin tokens: platform-wide rights (workspaces, any workspace's tokens).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()))
    # Until now every token could do everything. The first start's token ("admin") and the tokens
    # the server issued in its place for the local CLI ("cli" in the default workspace) were the
    # operator's: they keep their rights; every other token becomes a plain workspace token.
    op.execute(
        "UPDATE tokens SET admin = TRUE WHERE name = 'admin' OR (name = 'cli' AND workspace_id IN "
        "(SELECT id FROM workspaces WHERE name = 'default'))"
    )
