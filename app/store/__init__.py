"""Jobs and audit rows in a database (SQLAlchemy 2 + Alembic; SQLite or PostgreSQL)."""

from app.store.db import STATUSES, JobView, Store, iso, utcnow

__all__ = ["STATUSES", "JobView", "Store", "iso", "utcnow"]
