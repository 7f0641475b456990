"""Persistence: SQLModel tables, keyword-only functions per aggregate, Alembic migrations.

All SQL of the orchestrator is here. ``db.py`` makes the engine and the session scope (and
turns a value the database refuses into ``InvalidValue``); ``models.py`` holds the tables;
one module per aggregate holds its functions, each taking the caller's session first and
everything else by keyword: ``plugins``, ``events`` (the log, deliveries and attempts),
``webhooks``, ``tokens`` (API and host tokens), ``trust``, ``audit``, ``documents``,
``storage`` and ``secrets``. ``crud`` re-exports the names callers used before the split.
"""
