"""Plugins, their versions, state transitions, grants and containers.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugins",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("pending_version", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_plugins_state", "plugins", ["state"])
    op.create_table(
        "plugin_versions",
        sa.Column(
            "plugin_id",
            sa.String(128),
            sa.ForeignKey("plugins.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("image_id", sa.String(128), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_digest", sa.String(80), nullable=True),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "state_transitions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("plugin_id", sa.String(128), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_transitions_plugin_at", "state_transitions", ["plugin_id", "at"])
    op.create_table(
        "grants",
        sa.Column(
            "plugin_id",
            sa.String(128),
            sa.ForeignKey("plugins.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("permission", sa.String(64), primary_key=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "containers",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column(
            "plugin_id",
            sa.String(128),
            sa.ForeignKey("plugins.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("endpoint", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_containers_plugin_id", "containers", ["plugin_id"])


def downgrade() -> None:
    op.drop_table("containers")
    op.drop_table("grants")
    op.drop_table("state_transitions")
    op.drop_table("plugin_versions")
    op.drop_table("plugins")
