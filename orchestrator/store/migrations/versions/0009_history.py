"""Installation history: every version installed, upgrade, rollback, enable, disable, reload
and uninstall of a plugin, with who and when. No foreign key to ``plugins``: the history is
kept after the plugin is uninstalled.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugin_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("plugin_id", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_plugin_history_plugin_id", "plugin_history", ["plugin_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_plugin_history_plugin_id", table_name="plugin_history")
    op.drop_table("plugin_history")
