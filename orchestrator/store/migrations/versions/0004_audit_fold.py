"""Audit records fold repeated refusals: a count, the minute they fold into and the latest
call's time. Records written before read as one call each and never fold.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("audit_log", sa.Column("minute", sa.DateTime(timezone=True), nullable=True))
    op.add_column("audit_log", sa.Column("last_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE audit_log SET last_at = at")
    # NULL minutes (old records, allowed actions) are distinct to a unique index: never folded.
    op.create_index(
        "ux_audit_log_fold", "audit_log", ["actor", "action", "outcome", "minute"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_audit_log_fold", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        for column in ("last_at", "minute", "count"):
            batch.drop_column(column)
