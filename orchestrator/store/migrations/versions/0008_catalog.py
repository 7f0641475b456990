"""The plugin catalog: publishers and their namespaces, plugins, immutable versions, facet
tags, daily statistics, and a full-text index over each plugin's latest version.

The index differs by database, behind one search API (``store/catalog.py``):

* PostgreSQL: a stored generated ``tsvector`` column on ``catalog_plugins``, weighted name
  and id (A), keywords and categories (B), description (C), README (D), with a GIN index.
  The id's dots and dashes become spaces so ``com.example.weather`` is found by ``weather``
  (the parser would otherwise read the id as one host name).
* SQLite: an FTS5 table (``catalog_fts``, Porter stemming like PostgreSQL's ``english``
  configuration, prefix indexes for two and three characters) kept by triggers on
  ``catalog_plugins``. ``catalog_fts_docs`` gives each plugin a stable integer row id, so a
  trigger replaces one plugin's entry by row id instead of scanning the whole index, and a
  ``VACUUM`` (which may renumber the implicit row ids of a table keyed by text) cannot
  detach the index from its plugins.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PG_DOCUMENT = """
    setweight(to_tsvector('english'::regconfig,
        coalesce(name, '') || ' ' || translate(id, '.-_', '   ')), 'A')
    || setweight(to_tsvector('english'::regconfig, coalesce(search_tags, '')), 'B')
    || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'C')
    || setweight(to_tsvector('english'::regconfig, coalesce(readme, '')), 'D')
"""

_SQLITE_FTS = (
    """
    CREATE TABLE catalog_fts_docs (
        rowid INTEGER PRIMARY KEY,
        plugin_id VARCHAR(128) NOT NULL UNIQUE
    )
    """,
    """
    CREATE VIRTUAL TABLE catalog_fts USING fts5(
        plugin_id UNINDEXED, name, tags, description, readme,
        tokenize = 'porter unicode61 remove_diacritics 2',
        prefix = '2 3'
    )
    """,
    """
    CREATE TRIGGER catalog_fts_insert AFTER INSERT ON catalog_plugins BEGIN
        INSERT INTO catalog_fts_docs (plugin_id) VALUES (new.id);
        INSERT INTO catalog_fts (rowid, plugin_id, name, tags, description, readme)
        VALUES (
            (SELECT rowid FROM catalog_fts_docs WHERE plugin_id = new.id),
            new.id, new.name || ' ' || new.id, new.search_tags, new.description, new.readme
        );
    END
    """,
    """
    CREATE TRIGGER catalog_fts_update
    AFTER UPDATE OF name, search_tags, description, readme ON catalog_plugins BEGIN
        DELETE FROM catalog_fts
        WHERE rowid = (SELECT rowid FROM catalog_fts_docs WHERE plugin_id = old.id);
        INSERT INTO catalog_fts (rowid, plugin_id, name, tags, description, readme)
        VALUES (
            (SELECT rowid FROM catalog_fts_docs WHERE plugin_id = new.id),
            new.id, new.name || ' ' || new.id, new.search_tags, new.description, new.readme
        );
    END
    """,
    """
    CREATE TRIGGER catalog_fts_delete AFTER DELETE ON catalog_plugins BEGIN
        DELETE FROM catalog_fts
        WHERE rowid = (SELECT rowid FROM catalog_fts_docs WHERE plugin_id = old.id);
        DELETE FROM catalog_fts_docs WHERE plugin_id = old.id;
    END
    """,
)


def _stamp(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "catalog_publishers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=True),
        _stamp("created_at"),
    )
    op.create_index("ix_catalog_publishers_token_id", "catalog_publishers", ["token_id"])
    op.create_table(
        "catalog_namespaces",
        sa.Column("prefix", sa.String(128), primary_key=True),
        sa.Column(
            "publisher_id",
            sa.String(64),
            sa.ForeignKey("catalog_publishers.id"),
            nullable=False,
        ),
        _stamp("created_at"),
    )
    op.create_index("ix_catalog_namespaces_publisher_id", "catalog_namespaces", ["publisher_id"])
    op.create_table(
        "catalog_plugins",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column(
            "publisher", sa.String(64), sa.ForeignKey("catalog_publishers.id"), nullable=False
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("sort_name", sa.String(100), nullable=False),
        sa.Column("latest_version", sa.String(64), nullable=True),
        _stamp("latest_published_at", nullable=True),
        sa.Column("deprecated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("successor_id", sa.String(128), nullable=True),
        sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false()),
        _count("installs"),
        _count("active_installs"),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("search_tags", sa.Text(), nullable=False),
        sa.Column("deprecation_reason", sa.Text(), nullable=True),
        # Long text last: SQLite walks a long value's overflow pages to reach any column
        # after it, and searches read the short columns of thousands of rows.
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("readme", sa.Text(), nullable=False),
    )
    op.create_index("ix_catalog_plugins_publisher", "catalog_plugins", ["publisher"])
    # The browse orders (deprecated last, then the sort key, then id): an index each, with
    # the sort key's direction, so a page without words reads the index instead of sorting.
    op.create_index("ix_catalog_plugins_name", "catalog_plugins", ["deprecated", "sort_name", "id"])
    op.create_index(
        "ix_catalog_plugins_popular",
        "catalog_plugins",
        ["deprecated", sa.text("installs DESC"), "id"],
    )
    op.create_index(
        "ix_catalog_plugins_newest",
        "catalog_plugins",
        ["deprecated", sa.text("latest_published_at DESC"), "id"],
    )
    op.create_table(
        "catalog_tags",
        sa.Column(
            "plugin_id",
            sa.String(128),
            sa.ForeignKey("catalog_plugins.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(64), primary_key=True),
    )
    op.create_index("ix_catalog_tags_value", "catalog_tags", ["kind", "value", "plugin_id"])
    op.create_table(
        "catalog_versions",
        sa.Column(
            "plugin_id",
            sa.String(128),
            sa.ForeignKey("catalog_plugins.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("summit_range", sa.String(128), nullable=False),
        sa.Column("readme", sa.Text(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("changelog", sa.Text(), nullable=False),
        sa.Column("license", sa.String(64), nullable=True),
        sa.Column("price", sa.JSON(), nullable=True),
        sa.Column("signature", sa.JSON(), nullable=True),
        sa.Column("signature_status", sa.String(16), nullable=False),
        sa.Column("scan_report", sa.JSON(), nullable=True),
        sa.Column("scan_summary", sa.JSON(), nullable=True),
        _stamp("published_at"),
        sa.Column("published_by", sa.String(160), nullable=False),
        sa.Column("yanked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("yanked_reason", sa.Text(), nullable=True),
        _stamp("yanked_at", nullable=True),
    )
    op.create_index("ix_catalog_versions_range", "catalog_versions", ["summit_range", "yanked"])
    op.create_table(
        "catalog_daily_stats",
        sa.Column("plugin_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        _count("installs"),
        _count("uninstalls"),
        _count("active_installs"),
        _count("calls"),
        _count("errors"),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("latency_sum_ms", sa.Float(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["plugin_id", "version"],
            ["catalog_versions.plugin_id", "catalog_versions.version"],
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_catalog_daily_stats_day", "catalog_daily_stats", ["plugin_id", "day"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE catalog_plugins ADD COLUMN search tsvector "
            f"GENERATED ALWAYS AS ({_PG_DOCUMENT}) STORED"
        )
        # Kept in the row (compressed) rather than in the TOAST table: a broad search tests
        # and ranks thousands of documents, and fetching each from TOAST costs more than the
        # test itself; the planner also sees the table's real size, so it prefers the index.
        op.execute("ALTER TABLE catalog_plugins ALTER COLUMN search SET STORAGE MAIN")
        # fastupdate off: a publish writes the index at once instead of queueing entries in
        # a pending list that every search must scan, and that makes the planner's cost
        # estimate of the index so high (until the next VACUUM) that it scans the table.
        op.execute(
            "CREATE INDEX ix_catalog_plugins_search ON catalog_plugins USING gin (search) "
            "WITH (fastupdate = off)"
        )
    else:
        for statement in _SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_catalog_plugins_search")
    else:
        for trigger in ("catalog_fts_insert", "catalog_fts_update", "catalog_fts_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS catalog_fts")
        op.execute("DROP TABLE IF EXISTS catalog_fts_docs")
    op.drop_index("ix_catalog_daily_stats_day", table_name="catalog_daily_stats")
    op.drop_table("catalog_daily_stats")
    op.drop_index("ix_catalog_versions_range", table_name="catalog_versions")
    op.drop_table("catalog_versions")
    op.drop_index("ix_catalog_tags_value", table_name="catalog_tags")
    op.drop_table("catalog_tags")
    for index in (
        "ix_catalog_plugins_newest",
        "ix_catalog_plugins_popular",
        "ix_catalog_plugins_name",
        "ix_catalog_plugins_publisher",
    ):
        op.drop_index(index, table_name="catalog_plugins")
    op.drop_table("catalog_plugins")
    op.drop_index("ix_catalog_namespaces_publisher_id", table_name="catalog_namespaces")
    op.drop_table("catalog_namespaces")
    op.drop_index("ix_catalog_publishers_token_id", table_name="catalog_publishers")
    op.drop_table("catalog_publishers")
