"""Canary: a plugin's candidate container, running beside its current one, is marked with the
percent of the plugin's calls it takes (NULL: the plugin's current container). Every replica
reads it to route that share.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("containers", sa.Column("canary_weight", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("containers") as batch:
        batch.drop_column("canary_weight")
