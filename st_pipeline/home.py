"""Where st_pipeline keeps local state when no database URL is configured.

``ST_PIPELINE_HOME`` (default ``~/.st_pipeline``) holds the default SQLite warehouse
(``warehouse.db``) and tenant registry (``registry.db``).
"""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """The local state directory, created on first use."""
    path = Path(os.environ.get("ST_PIPELINE_HOME") or Path.home() / ".st_pipeline").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sqlite_url(filename: str) -> str:
    return f"sqlite:///{home_dir() / filename}"
