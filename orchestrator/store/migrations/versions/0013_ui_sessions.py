"""Web UI sessions in the database, so every replica serves every session and a restart keeps
people signed in: keyed by the sha256 of the session id, the API token sealed with the secrets
key, times in unix seconds, the one-shot messages waiting for the next page.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("token", sa.LargeBinary(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("seen", sa.Float(), nullable=False),
        sa.Column("flashes", sa.JSON(), nullable=False),
    )
    op.create_index("ix_ui_sessions_seen", "ui_sessions", ["seen"])


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_seen", table_name="ui_sessions")
    op.drop_table("ui_sessions")
