"""Versioned schemas of the project's databases (the warehouse and the registry): check, create, upgrade.

Each database has Alembic migrations shipped in the package and its own version table. The same
rules hold for both:

- **empty** (no version and none of its tables): created at the head revision on first use, as
  Dagster does with its own storage — under the schema-change lock, re-checked once the lock is
  held, so that two first runs at once create it once;
- **current** (at the head revision): used as it is;
- **behind** (an older revision, or its tables without a version table): refused, with a message
  to run ``st-pipeline db upgrade``; an upgrade is never applied behind an operator's back;
- **ahead** (a revision this code does not know): refused; a newer st_pipeline upgraded it.

The check reads the version table with plain SQL against the ``revisions`` constant, so that a run
loads Alembic only when it has a schema to create (a test keeps the constant equal to the scripts).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from st_pipeline.database import exclusive_lock

if TYPE_CHECKING:
    from alembic.config import Config

UPGRADE_COMMAND = "`st-pipeline db upgrade`"

_ALEMBIC_RUNS = threading.Lock()  # one Alembic run at a time in this process (see ``_migrate``)


SCHEMA_CHANGE_WAIT_S = 300.0


@contextmanager
def schema_change_lock(
    engine: sa.Engine, wait_s: float = SCHEMA_CHANGE_WAIT_S, *, database: str = "warehouse"
) -> Iterator[None]:
    """Be the only process changing the database's tables for the block (wrap the transaction in it).

    Runs of different tenants create tables on demand, and the first use of an empty warehouse or
    registry creates its schema; without this, two first runs at once both see a table missing and
    the second's CREATE fails. Inspect inside the block. Waits at most ``wait_s``. ``database``
    names it in the timeout message. Not re-entrant: never call it inside itself.
    """

    def busy() -> Exception:
        return TimeoutError(
            f"another process kept the {database}'s schema-change lock for {wait_s:.0f} s (creating "
            "tables); retry the run, and look for a stuck st-pipeline process if it happens again"
        )

    with exclusive_lock(engine, "schema", wait_s=wait_s, busy=busy):
        yield


class SchemaOutOfDateError(RuntimeError):
    """A database's schema revision is not the one this code needs (behind, ahead, or not adoptable)."""


@dataclass(frozen=True)
class SchemaState:
    """What a database holds: its revision, and (when it has none) which of our tables are there."""

    revision: str | None
    tables: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing of ours yet: the schema may be created without asking anyone."""
        return self.revision is None and not self.tables


@dataclass(frozen=True)
class Upgrade:
    """What ``VersionedSchema.upgrade`` did: the revision before (None: none) and after."""

    before: str | None
    after: str | None
    adopted: bool = False  # tables without a version table were verified and stamped first

    def describe(self) -> str:
        """``0001 → 0005``, ``empty → 0005``, ``unversioned (existing tables adopted) → 0001``."""
        if self.adopted:
            before = "unversioned (existing tables adopted)"
        else:
            before = self.before or "empty"
        note = " (already current)" if self.before == self.after and not self.adopted else ""
        return f"{before} → {self.after}{note}"


@dataclass(frozen=True)
class VersionedSchema:
    """One database's migrations and the rules above.

    ``adopt``, if given, lets ``upgrade`` take over tables made before the migrations existed: it
    verifies them on the connection (raising ``SchemaOutOfDateError`` if they do not match) and
    returns the revision to stamp. ``after_upgrade`` runs in the transaction of an upgrade to head.
    """

    label: str  # "warehouse", "registry": how messages name the database
    variable: str  # the setting that points at it
    migrations: Path
    version_table: str
    revisions: tuple[str, ...]  # every revision, oldest first; the last is the head
    owns_table: Callable[[str], bool]
    adopt: Callable[[sa.Connection, str], str] | None = None
    after_upgrade: Callable[[sa.Connection], object] | None = None

    @property
    def head(self) -> str:
        """The newest revision this code knows."""
        return self.revisions[-1]

    # -- Alembic ---------------------------------------------------------------------------------

    def alembic_config(self, connection: sa.Connection | None = None) -> Config:
        """An Alembic configuration of these migrations, running on ``connection`` if given."""
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(self.migrations))
        config.attributes["version_table"] = self.version_table
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def alembic_revisions(self) -> tuple[str, ...]:
        """Every revision as Alembic reads it from the scripts, oldest first."""
        from alembic.script import ScriptDirectory

        scripts = ScriptDirectory.from_config(self.alembic_config())
        return tuple(reversed([script.revision for script in scripts.walk_revisions()]))

    # -- state and check -------------------------------------------------------------------------

    def current_revision(self, engine: sa.Engine) -> str | None:
        """The revision the database is at; None before any migration."""
        with engine.connect() as conn:
            return self._revision(conn)

    def _revision(self, conn: sa.Connection) -> str | None:
        if not sa.inspect(conn).has_table(self.version_table):
            return None
        return conn.execute(sa.text(f"SELECT version_num FROM {self.version_table}")).scalar()

    def state(self, engine: sa.Engine) -> SchemaState:
        """The revision; without one, our tables present (listed only then: a warehouse has many)."""
        with engine.connect() as conn:
            revision = self._revision(conn)
            if revision is not None:
                return SchemaState(revision)
            names = sa.inspect(conn).get_table_names()
        return SchemaState(None, tuple(sorted(name for name in names if self.owns_table(name))))

    def refusal(self, state: SchemaState, where: str) -> str | None:
        """Why a run must not use a database in ``state`` and what to do; None if it may."""
        head = self.head
        again = f"Run {UPGRADE_COMMAND} (with the same {self.variable}), then retry."
        if state.revision == head:
            return None
        if state.revision is not None and state.revision not in self.revisions:
            return (
                f"the {self.label} {where} is at schema revision {state.revision}, which this version of "
                f"st_pipeline does not know (its newest is {head}): a newer st_pipeline has upgraded it. Run "
                f"that version (or newer); {UPGRADE_COMMAND} of this one cannot downgrade a schema."
            )
        if state.revision is not None:
            what = f"is at schema revision {state.revision}"
        elif state.tables:
            shown = ", ".join(state.tables[:3]) + (", …" if len(state.tables) > 3 else "")
            what = f"has st_pipeline tables ({shown}) but no schema version ({self.version_table})"
            if self.adopt is not None:
                what += f": it was made before the {self.label} had migrations"
        else:
            what = "has no st_pipeline schema yet"
        return f"the {self.label} {where} {what}; this version of st_pipeline needs revision {head}. {again}"

    def check(self, engine: sa.Engine, where: str) -> None:
        """Raise ``SchemaOutOfDateError`` unless the database is at the head revision."""
        message = self.refusal(self.state(engine), where)
        if message is not None:
            raise SchemaOutOfDateError(message)

    def ensure(self, engine: sa.Engine, where: str) -> bool:
        """Create an empty database's schema (returns True if this call did); else ``check``.

        Only an empty database is touched: one behind or ahead is refused as by ``check``.
        """
        created = False
        if self.state(engine).empty:
            with schema_change_lock(engine, database=self.label):
                # Another process may have created it while this one waited for the lock.
                if self.state(engine).empty:
                    self._migrate(engine, "head", adopt=False, where=where)
                    created = True
        self.check(engine, where)
        return created

    # -- upgrade ---------------------------------------------------------------------------------

    def upgrade(self, engine: sa.Engine, revision: str = "head", *, where: str | None = None) -> Upgrade:
        """Apply every migration up to ``revision`` (idempotent), under the schema-change lock.

        Refuses a database ahead of this code. Tables without a version table are adopted if
        ``adopt`` is set (verified, stamped, then upgraded); otherwise Alembic starts from its base.
        """
        where = where or _describe(engine)
        with schema_change_lock(engine, database=self.label):
            state = self.state(engine)
            if state.revision is not None and state.revision not in self.revisions:
                raise SchemaOutOfDateError(self.refusal(state, where))
            adopt = state.revision is None and bool(state.tables) and self.adopt is not None
            self._migrate(engine, revision, adopt=adopt, where=where)
            return Upgrade(state.revision, self.current_revision(engine), adopted=adopt)

    def _migrate(self, engine: sa.Engine, revision: str, *, adopt: bool, where: str) -> None:
        from alembic import command

        # Alembic's ``op`` and ``context`` are process-wide: two migrations run by threads of one
        # process (sensor ticks of a code server) would send each other's DDL to the wrong connection.
        with _ALEMBIC_RUNS, engine.begin() as conn:
            if adopt:
                assert self.adopt is not None
                command.stamp(self.alembic_config(conn), self.adopt(conn, where))
            command.upgrade(self.alembic_config(conn), revision)
            if revision == "head" and self.after_upgrade is not None:
                self.after_upgrade(conn)


def _describe(engine: sa.Engine) -> str:
    from st_pipeline.database import describe_url

    return describe_url(engine)


def run_migrations_in_alembic_environment() -> None:
    """The body of each migrations directory's ``env.py``: run the migrations on the connection that
    ``VersionedSchema`` handed in, recording the revision in that database's own version table — the
    warehouse, the registry and Dagster's storage (``alembic_version``) may share one database."""
    from alembic import context

    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("st_pipeline's migrations run through `st-pipeline db upgrade`, not the alembic command")
    context.configure(connection=connection, target_metadata=None, version_table=config.attributes["version_table"])
    with context.begin_transaction():
        context.run_migrations()
