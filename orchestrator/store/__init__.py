"""Persistence: SQLModel tables, keyword-only crud functions and Alembic migrations."""
