"""Opening the project's databases (warehouse and registry): one way, with safe defaults.

- A SQLite file is created owner-only (``0600`` in a ``0700`` directory) before SQLite opens it;
  SQLite gives its WAL and shared-memory files the same mode. WAL journal and a busy timeout let
  the UI and sensors read while a run writes.
- Statement errors never echo their parameters (``hide_parameters``): a failing insert cannot
  print a secret, encrypted or not.
- An unreachable or unusable database fails at once, in one line naming the variable.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from st_pipeline.home import create_private_file
from st_pipeline.redaction import redact


class DatabaseError(RuntimeError):
    """A database cannot be opened; the message names the variable and the database (no password)."""


def describe_url(target: sa.Engine | sa.URL | str) -> str:
    """The URL with any password hidden, for messages and metadata."""
    url = target.url if isinstance(target, sa.Engine) else sa.make_url(target)
    return url.render_as_string(hide_password=True)


def open_engine(url: str, *, variable: str) -> sa.Engine:
    """A connected engine for ``url`` (the value of ``variable``, or its default)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        create_private_file(Path(parsed.database))
    engine = sa.create_engine(parsed, hide_parameters=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseError(f"cannot open {variable} ({describe_url(parsed)}): {redact(reason)}") from None
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives any crash of the process (what the crash tests kill); only a
    # power loss can drop the last commits. Saves an fsync per page.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
