"""Resource monitor: brokered calls' errors and time in each plugin's usage series, beside the
calls already there: ``errors`` and ``call_usec`` within the bucket, ``errors_total`` and
``call_usec_total`` the running totals. Rows written before stay NULL (not known); the totals
start from zero at the first sample after the upgrade.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_COLUMNS = ("errors", "errors_total", "call_usec", "call_usec_total")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("resource_usage", sa.Column(name, sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # On SQLite, Alembic drops a column by rebuilding the table: one batch rebuilds it once.
    with op.batch_alter_table("resource_usage") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
