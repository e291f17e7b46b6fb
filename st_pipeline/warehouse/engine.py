"""The warehouse database: any SQLAlchemy URL of SQLite or PostgreSQL (``ST_PIPELINE_WAREHOUSE_URL``).

Default: a SQLite file ``warehouse.db`` in ``ST_PIPELINE_HOME``. Production:
``postgresql://user@host:5432/db``.
"""

from __future__ import annotations

import sqlalchemy as sa

from st_pipeline.database import describe_url, open_engine

WAREHOUSE_VARIABLE = "ST_PIPELINE_WAREHOUSE_URL"

__all__ = ["create_warehouse_engine", "describe_url"]


def create_warehouse_engine(url: str) -> sa.Engine:
    """A connected engine for the warehouse at ``url`` (see ``st_pipeline.database``)."""
    return open_engine(url, variable=WAREHOUSE_VARIABLE)
