"""Catalog collections (a named set of plugins and ranges, in immutable versions) and the
installs and uninstalls other orchestrators report to this catalog (one row per orchestrator,
plugin version, event and day, so a report sent twice counts once).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _stamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "catalog_collections",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column(
            "publisher",
            sa.String(64),
            sa.ForeignKey("catalog_publishers.id"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("latest_version", sa.String(64), nullable=True),
        _stamp("created_at"),
        _stamp("updated_at"),
    )
    op.create_index("ix_catalog_collections_publisher", "catalog_collections", ["publisher"])
    op.create_table(
        "catalog_collection_versions",
        sa.Column(
            "collection_id",
            sa.String(128),
            sa.ForeignKey("catalog_collections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("plugins", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("readme", sa.Text(), nullable=False),
        _stamp("published_at"),
        sa.Column("published_by", sa.String(160), nullable=False),
    )
    op.create_index(
        "ix_catalog_collection_versions_published",
        "catalog_collection_versions",
        ["published_at"],
    )
    op.create_table(
        "catalog_install_reports",
        sa.Column("plugin_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("event", sa.String(16), primary_key=True),
        sa.Column("orchestrator", sa.String(128), primary_key=True),
        sa.Column("reporter", sa.String(160), nullable=False),
        _stamp("reported_at"),
        sa.ForeignKeyConstraint(
            ["plugin_id", "version"],
            ["catalog_versions.plugin_id", "catalog_versions.version"],
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_catalog_install_reports_reporter",
        "catalog_install_reports",
        ["reporter", "plugin_id", "version", "day"],
    )


def downgrade() -> None:
    op.drop_index("ix_catalog_install_reports_reporter", table_name="catalog_install_reports")
    op.drop_table("catalog_install_reports")
    op.drop_index(
        "ix_catalog_collection_versions_published", table_name="catalog_collection_versions"
    )
    op.drop_table("catalog_collection_versions")
    op.drop_index("ix_catalog_collections_publisher", table_name="catalog_collections")
    op.drop_table("catalog_collections")
