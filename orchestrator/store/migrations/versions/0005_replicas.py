"""Replicas: the supervisor lease, and the call token kept with each container (plugins on a
network address require it; every replica must be able to call them). A version's image id
grows to hold a pinned reference (``registry/name@sha256:...``, Kubernetes).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("containers", sa.Column("call_token", sa.String(128), nullable=True))
    with op.batch_alter_table("plugin_versions") as batch:
        batch.alter_column(
            "image_id", existing_type=sa.String(128), type_=sa.String(512), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("plugin_versions") as batch:
        batch.alter_column(
            "image_id", existing_type=sa.String(512), type_=sa.String(128), existing_nullable=True
        )
    with op.batch_alter_table("containers") as batch:
        batch.drop_column("call_token")
    op.drop_table("leases")
