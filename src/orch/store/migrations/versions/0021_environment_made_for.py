"""An environment records the agent or service whose published Dockerfile it was made for, so that
an agent delete lists as unused only environments a publish made, never one the workspace made
with `orch env create` that a publish reused (docs/agents.md).

Revision ID: 0021
Revises: 0020
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"

# The names a publish gave the environments it made (services/agents.py _environment_name):
# AGENT-dockerfile, AGENT-dockerfile-2, -3, ...
_MADE_BY_PUBLISH = re.compile(r"(.+)-dockerfile(?:-[2-9]|-[1-9][0-9]+)?")


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("made_for", sa.String(63), nullable=True))
    # Who made an existing environment was not recorded: one named as a publish names them is
    # taken to be a publish's, for the agent or service its name begins with; the others stay
    # the workspace's own.
    environments = sa.table(
        "environments", sa.column("id"), sa.column("name"), sa.column("kind"), sa.column("made_for")
    )
    bind = op.get_bind()
    custom = bind.execute(
        sa.select(environments.c.id, environments.c.name).where(environments.c.kind == "custom")
    )
    for env_id, name in list(custom):
        if m := _MADE_BY_PUBLISH.fullmatch(name):
            bind.execute(environments.update().where(environments.c.id == env_id).values(made_for=m[1]))


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("made_for")
