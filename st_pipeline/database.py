"""Opening the project's databases (warehouse and registry): one way, with safe defaults.

- A SQLite file is created owner-only (``0600`` in a ``0700`` directory) before SQLite opens it;
  SQLite gives its WAL and shared-memory files the same mode. WAL journal and a busy timeout let
  the UI and sensors read while a run writes.
- Statement errors never echo their parameters (``hide_parameters``): a failing insert cannot
  print a secret, encrypted or not.
- An unreachable or unusable database fails at once, in one line naming the variable.

And one way to make processes sharing a database take turns (``exclusive_lock``): a tenant's
sync, a schema change; and one way to keep a bookkeeping row (``upsert_state``).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

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


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives any crash of the process (what the crash tests kill); only a
    # power loss can drop the last commits. Saves an fsync per page.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    dbapi_connection.create_function(SQLITE_LOCAL_DAY, 2, sqlite_local_day, deterministic=True)


# SQLite has no time zones: the marts' local days come from this function, registered on every connection.
SQLITE_LOCAL_DAY = "st_local_day"


def sqlite_local_day(timestamp: str | None, time_zone: str | None) -> str | None:
    """The ``YYYY-MM-DD`` day in ``time_zone`` of a UTC timestamp as SQLite keeps it (``YYYY-MM-DD HH:MM:SS…``)."""
    if timestamp is None or time_zone is None:
        return None
    try:
        instant = datetime.fromisoformat(timestamp).replace(tzinfo=UTC)
        return instant.astimezone(_zone(time_zone)).date().isoformat()
    except (ValueError, ZoneInfoNotFoundError):
        return None


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# How often a process waiting for an ``exclusive_lock`` tries again; the wait itself is the caller's.
LOCK_RETRY_INTERVAL_S = 0.5


def advisory_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key for ``name``, unlikely to meet another application's."""
    digest = hashlib.blake2b(f"st_pipeline.{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def exclusive_lock(engine: sa.Engine, name: str, *, wait_s: float, busy: Callable[[], Exception]) -> Iterator[None]:
    """Be the only process holding lock ``name`` of this database for the block.

    PostgreSQL: a session-level advisory lock (``advisory_key(name)``) on a connection held for the
    block. SQLite: an exclusive ``flock`` on a file beside the database (``:`` in the name
    becomes ``-``). Both vanish with the
    process, so a killed holder never blocks anyone. Waits at most ``wait_s``, then raises
    ``busy()``. Not re-entrant.
    """
    acquire = (
        _postgres_lock(engine, advisory_key(name)) if engine.dialect.name == "postgresql" else _file_lock(engine, name)
    )
    with acquire as try_lock:
        deadline = time.monotonic() + max(0.0, wait_s)
        while not try_lock():
            if time.monotonic() >= deadline:
                raise busy()
            time.sleep(LOCK_RETRY_INTERVAL_S)  # waiting on another process's lock, bounded by wait_s
        yield


def lock_file_is_held(engine: sa.Engine, name: str) -> bool:
    """SQLite: whether another process holds lock ``name`` (tried and released at once)."""
    with _file_lock(engine, name) as try_lock:
        return not try_lock()


@contextmanager
def _postgres_lock(engine: sa.Engine, key: int) -> Iterator[Callable[[], bool]]:
    conn = engine.connect()
    held = False

    def try_lock() -> bool:
        nonlocal held
        held = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one())
        conn.commit()
        return held

    try:
        yield try_lock
    finally:
        try:
            if held:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
        finally:
            conn.close()


@contextmanager
def _file_lock(engine: sa.Engine, name: str) -> Iterator[Callable[[], bool]]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield lambda: True  # one process, one connection: nothing to share the database with
        return
    fd = os.open(Path(f"{database}.{name.replace(':', '-')}.lock"), os.O_RDWR | os.O_CREAT, 0o600)

    def try_lock() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        yield try_lock
    finally:
        os.close(fd)  # closing releases the lock


def upsert_state(
    conn: sa.Connection,
    table: sa.Table,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    on_insert: Mapping[str, Any] | None = None,
) -> None:
    """Insert the row of primary key ``key`` with ``values`` (and ``on_insert``), or set ``values`` on
    the row already there: a cursor, a build's state, a status, a flag.

    One ``INSERT … ON CONFLICT (key) DO UPDATE`` statement (PostgreSQL and SQLite alike), in the
    caller's transaction; columns in neither keep what they had, or their default.
    """
    assert set(key) == {c.name for c in table.primary_key.columns}, f"{table.name}: key must be its primary key"
    insert = postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    row = {**key, **(on_insert or {}), **values}
    conn.execute(insert.values(row).on_conflict_do_update(index_elements=list(key), set_=dict(values)))
