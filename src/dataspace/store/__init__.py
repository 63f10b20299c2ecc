"""State in SQL: SQLAlchemy 2 models, Alembic migrations, SQLite (WAL) or PostgreSQL."""

from dataspace.store.db import Store

__all__ = ["Store"]
