"""Idle pause: when a plugin's container was frozen for want of calls (NULL while it runs).

Every replica reads it to know that the next call must resume the container first, and an
orchestrator that restarts adopts a frozen container as paused, not as crashed.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("containers", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("containers") as batch:
        batch.drop_column("paused_at")
