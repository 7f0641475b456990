"""Resource monitor: each plugin's usage series, one row per plugin, tier and bucket.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COUNTERS = (
    "memory_bytes",
    "memory_max_bytes",
    "memory_limit_bytes",
    "cpu_usec",
    "cpu_total_usec",
    "cpu_periods",
    "cpu_throttled_periods",
    "io_read_bytes",
    "io_write_bytes",
    "network_bytes",
    "network_total_bytes",
    "storage_bytes",
    "calls",
    "calls_total",
)


def upgrade() -> None:
    op.create_table(
        "resource_usage",
        sa.Column("plugin_id", sa.String(128), primary_key=True),
        sa.Column("step_s", sa.Integer(), primary_key=True),
        sa.Column("at", sa.BigInteger(), primary_key=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in _COUNTERS),
        sa.Column("pids", sa.Integer(), nullable=True),
    )
    op.create_index("ix_resource_usage_step_at", "resource_usage", ["step_s", "at"])


def downgrade() -> None:
    op.drop_index("ix_resource_usage_step_at", table_name="resource_usage")
    op.drop_table("resource_usage")
