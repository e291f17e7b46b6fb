"""The warehouse database: any SQLAlchemy URL (``ST_PIPELINE_WAREHOUSE_URL``).

Default: a SQLite file ``warehouse.db`` in ``ST_PIPELINE_HOME`` (``~/.st_pipeline``).
Production: ``postgresql://user@host:5432/db``.
"""

from __future__ import annotations

import os

import sqlalchemy as sa

from st_pipeline.home import sqlite_url


def default_warehouse_url() -> str:
    return os.environ.get("ST_PIPELINE_WAREHOUSE_URL") or sqlite_url("warehouse.db")


def create_warehouse_engine(url: str | None = None) -> sa.Engine:
    """An engine for the warehouse; SQLite gets WAL mode so the UI can read while a run writes."""
    engine = sa.create_engine(url or default_warehouse_url())
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives any crash of the process (what the crash tests kill);
            # only a power loss can drop the last commits. Saves an fsync per page.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def describe_url(engine: sa.Engine) -> str:
    """The URL with any password hidden, for logs and metadata."""
    return engine.url.render_as_string(hide_password=True)
