"""Build a tenant's hub tables from its raw tables: incrementally, or in full.

An incremental build of a hub table deletes the rows of the raw records changed since the last
build (``st_transform_state.watermark``: the newest ``extracted_at`` it processed) and inserts them
again from their current payloads; records flagged deleted come through with ``deleted_at``. So a
sync that changed 1% of the raw rows costs about 1% of a full build, and gives the same table.
A full build (asked for, the first one, or after the table's spec changed) replaces every row of
the tenant. Each table is built in one transaction with its state, so a crash loses nothing.

Callers hold the tenant's lock (``warehouse.locks.tenant_lock``): no sync writes raw rows of the
tenant while its hubs build, which is what makes "changed after the watermark" exact.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, overload
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from st_pipeline import sqltypes
from st_pipeline.database import upsert_state
from st_pipeline.schema_versions import schema_change_lock
from st_pipeline.servicetitan.catalogue import Catalogue
from st_pipeline.transform import sql
from st_pipeline.transform.hubs import HUB_TABLES
from st_pipeline.transform.mart_build import (
    MartBuild,
    build_mart,
    ensure_mart_tables,
    entities_reached,
    mart_fingerprint,
    mart_tables,
)
from st_pipeline.transform.mart_parts import Mart
from st_pipeline.transform.marts import MARTS
from st_pipeline.transform.spec import HubTable
from st_pipeline.transform.tables import ensure_hub_tables, hub_table
from st_pipeline.warehouse.scratch import analyze, drop, load_ids
from st_pipeline.warehouse.tables import dataset_status_table, raw_table_name, transform_state_table


@dataclass
class HubBuild:
    """What one build of one hub table for one tenant did."""

    table: str
    mode: str  # "full", "incremental", "unchanged" or "missing_source"
    source_rows_changed: int = 0  # raw records reprocessed
    source_rows_total: int = 0  # the tenant's raw records of the source
    rows_deleted: int = 0
    rows_inserted: int = 0
    row_count: int = 0  # the tenant's rows in the hub table afterwards
    duration_s: float = 0.0
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.mode in ("full", "incremental") and (self.rows_deleted > 0 or self.rows_inserted > 0)

    @property
    def share_reprocessed(self) -> float:
        """Reprocessed raw records as a share of the tenant's raw records (1.0 for a full build)."""
        return self.source_rows_changed / self.source_rows_total if self.source_rows_total else 0.0


@dataclass
class TenantBuild:
    """Every hub table and mart built for one tenant."""

    tenant_id: int
    hubs: list[HubBuild] = field(default_factory=list)
    marts: list[MartBuild] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def changed_tables(self) -> list[str]:
        return [h.table for h in self.hubs if h.changed]

    @property
    def missing_sources(self) -> list[HubBuild]:
        return [h for h in self.hubs if h.mode == "missing_source"]


def _state(conn: sa.Connection, tenant_id: int, table: str) -> sa.Row | None:
    t = transform_state_table
    return conn.execute(sa.select(t).where(t.c.tenant_id == tenant_id, t.c.table_name == table)).first()


def _save_state(
    conn: sa.Connection,
    tenant_id: int,
    spec: HubTable,
    watermark: datetime | None,
    row_count: int,
    run_id: str,
    at: datetime,
) -> None:
    upsert_state(
        conn,
        transform_state_table,
        {"tenant_id": tenant_id, "table_name": spec.table_name},
        {
            "fingerprint": spec.fingerprint(),
            "watermark": watermark,
            "row_count": row_count,
            "run_id": run_id,
            "built_at": at,
        },
    )


def _raw_row_count(conn: sa.Connection, spec: HubTable, tenant_id: int, raw: str) -> int:
    """The tenant's raw rows of the source, as the write path keeps it (counted only when unknown)."""
    status = dataset_status_table.c
    known = conn.execute(
        sa.select(status.row_count).where(status.tenant_id == tenant_id, status.dataset == spec.source)
    ).scalar()
    if known is not None and known >= 0:
        return int(known)
    return conn.execute(sql.raw_count_statement(raw, tenant_id=tenant_id)).scalar_one()


def _write(conn: sa.Connection, statement: sa.Insert | sa.Delete) -> int:
    """Run an INSERT or DELETE; the rows it changed (SQLite's driver does not count ``WITH … INSERT``)."""
    result = conn.execute(statement)
    if conn.dialect.name == "sqlite":
        return int(conn.execute(sa.select(sa.func.changes())).scalar_one())
    return result.rowcount


def _in_utc(conn: sa.Connection) -> None:
    """Read timestamps without a zone as UTC for the rest of the transaction (PostgreSQL; SQLite has no zones)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))


_UNREAD = object()


def build_hub(
    engine: sa.Engine,
    spec: HubTable,
    tenant_id: int,
    run_id: str,
    *,
    full: bool = False,
    existing_tables: set[str] | None = None,
    changed_count: int | None = None,
    state: sa.Row | None | object = _UNREAD,
) -> HubBuild:
    """Build one hub table for one tenant; see the module's docstring. ``changed_count``: how many raw
    records changed since the last build, and ``state`` its state row, when the caller read them."""
    started = time.monotonic()
    dialect = engine.dialect.name
    raw = raw_table_name_for(spec)
    if existing_tables is None:
        existing_tables = set(sa.inspect(engine).get_table_names())
    if state is _UNREAD:
        with engine.connect() as conn:
            state = _state(conn, tenant_id, spec.table_name)
    assert state is None or isinstance(state, sa.Row)
    if raw not in existing_tables:
        # The source was never synced (scope not granted, dataset disabled): the table stays as it
        # is, empty for a new tenant, and says why.
        return HubBuild(
            spec.table_name,
            "missing_source",
            row_count=state.row_count if state is not None else 0,
            note=f"{spec.source} has not been synced for this tenant",
        )
    current = not full and state is not None and state.fingerprint == spec.fingerprint() and state.watermark is not None
    if current and changed_count == 0:
        assert state is not None  # current implies a state row
        with engine.connect() as conn:
            total = _raw_row_count(conn, spec, tenant_id, raw)
        return HubBuild(
            spec.table_name, "unchanged", 0, total, row_count=state.row_count, duration_s=time.monotonic() - started
        )
    with engine.begin() as conn:
        _in_utc(conn)
        watermark = _as_utc(conn.execute(sql.raw_max_extracted_statement(raw, tenant_id=tenant_id)).scalar())
        total = _raw_row_count(conn, spec, tenant_id, raw)
        at = datetime.now(UTC)
        if current:
            assert state is not None  # current implies a state row
            since = _as_utc(state.watermark)
            changed = (
                changed_count
                if changed_count is not None
                else conn.execute(sql.changed_count_statement(raw, tenant_id=tenant_id, since=since)).scalar_one()
            )
            if changed == 0:
                return HubBuild(
                    spec.table_name,
                    "unchanged",
                    0,
                    total,
                    row_count=state.row_count,
                    duration_s=time.monotonic() - started,
                )
            deleted = _write(conn, sql.delete_statement(spec, raw, tenant_id=tenant_id, since=since))
            inserted = _write(
                conn, sql.insert_statement(spec, raw, dialect, tenant_id=tenant_id, since=since, built_at=at)
            )
            row_count = state.row_count - deleted + inserted
            mode = "incremental"
        else:
            changed = total
            deleted = _write(conn, sql.delete_statement(spec, raw, tenant_id=tenant_id, since=None))
            inserted = _write(
                conn, sql.insert_statement(spec, raw, dialect, tenant_id=tenant_id, since=None, built_at=at)
            )
            row_count = inserted
            mode = "full"
            analyze(conn, hub_table(spec))
        _save_state(conn, tenant_id, spec, watermark, row_count, run_id, at)
    return HubBuild(spec.table_name, mode, changed, total, deleted, inserted, row_count, time.monotonic() - started)


def build_plan(hubs: Iterable[HubTable], marts: Iterable[Mart]) -> tuple[tuple[HubTable, ...], tuple[Mart, ...]]:
    """What building some hub tables and marts of a tenant takes, in build order.

    The hub tables the marts read are built first (from the raw rows changed since their last
    build), and so is every mart that reads a hub table being built: a hub table's changes are
    taken up once, so a mart left out would never see them.
    """
    wanted_hubs = {spec.table_name for spec in hubs} | {name for mart in marts for name in mart.reads}
    wanted_marts = {mart.name for mart in marts} | {m.name for m in MARTS if wanted_hubs & set(m.reads)}
    return (
        tuple(spec for spec in HUB_TABLES if spec.table_name in wanted_hubs),
        tuple(mart for mart in MARTS if mart.name in wanted_marts),
    )


def build_tenant(
    engine: sa.Engine,
    tenant_id: int,
    run_id: str,
    *,
    full: bool = False,
    hubs: tuple[HubTable, ...] = HUB_TABLES,
    marts: tuple[Mart, ...] = MARTS,
    as_of: date | None = None,
    time_zone: str | None = None,
) -> TenantBuild:
    """Build a tenant's hub tables, then the marts that read a hub table that changed.

    A mart is built incrementally — the facts of the entities the changes reach, found through its
    links on the hub tables both before and after they changed — unless it is new, its definition
    changed, a hub table it reads was built in full, the tenant's time zone changed, or ``full``: then
    in full. ``time_zone`` (IANA; None: UTC) is the tenant's calendar, the marts' days; ``as_of``
    (default: today in that zone) is the day receivables are aged on; a ``daily`` mart's first build
    of a (local) day is a full one. ``hubs`` and ``marts`` build only some of them (see ``build_plan``); every
    hub and mart table is created either way.
    """
    started = time.monotonic()
    existing = _ensure_tables(engine, HUB_TABLES, MARTS, run_id)
    result = TenantBuild(tenant_id)
    with engine.connect() as conn:
        states = {
            row.table_name: row
            for row in conn.execute(
                sa.select(transform_state_table).where(transform_state_table.c.tenant_id == tenant_id)
            )
        }
    changed_ids = {} if full else _changed_ids(engine, hubs, tenant_id, existing, states)
    reached_before = _reached(engine, marts, tenant_id, changed_ids)
    for spec in hubs:
        known = changed_ids.get(spec.table_name)
        result.hubs.append(
            build_hub(
                engine,
                spec,
                tenant_id,
                run_id,
                full=full,
                existing_tables=existing,
                changed_count=None if known is None else len(known),
                state=states.get(spec.table_name),
            )
        )
    reached_after = _reached(engine, marts, tenant_id, changed_ids)
    changed = set(result.changed_tables)
    rebuilt_in_full = {h.table for h in result.hubs if h.mode == "full"}
    at = datetime.now(UTC)
    zone = time_zone or "UTC"
    day = as_of or at.astimezone(ZoneInfo(zone)).date()
    fingerprints = _mart_fingerprints(engine, marts, run_id)
    for mart in marts:
        with engine.begin() as conn:
            _in_utc(conn)
            state = states.get(mart.table_name)
            fingerprint = zoned_fingerprint(fingerprints[mart.name], zone, day if mart.daily else None)
            in_full = (
                full or state is None or state.fingerprint != fingerprint or bool(rebuilt_in_full & set(mart.reads))
            )
            if not (in_full or changed & set(mart.reads)):
                continue
            entities = None if in_full else reached_before.get(mart.name, set()) | reached_after.get(mart.name, set())
            if entities is not None and not entities:
                continue
            built = build_mart(conn, mart, tenant_id, as_of=day, built_at=at, entities=entities, time_zone=zone)
            upsert_state(
                conn,
                transform_state_table,
                {"tenant_id": tenant_id, "table_name": mart.table_name},
                {
                    "fingerprint": fingerprint,
                    "watermark": None,
                    "row_count": built.row_count,
                    "run_id": run_id,
                    "built_at": at,
                },
            )
        result.marts.append(built)
    result.duration_s = time.monotonic() - started
    return result


def zoned_fingerprint(fingerprint: str, time_zone: str, build_day: date | None = None) -> str:
    """A mart's state fingerprint for a tenant: its definition's and the tenant's time zone (a tenant
    whose zone changed has every mart rebuilt in full, in its new calendar), and for a ``daily`` mart
    the build day it was built as of (its first build on another day is a full one)."""
    zoned = f"{fingerprint}@{time_zone}"
    return zoned if build_day is None else f"{zoned}#{build_day.isoformat()}"


# The row of ``st_transform_state`` (tenant 0: no tenant) that records the shape of every hub and mart
# table as last checked, so that a build whose tables are as expected does not inspect each of them.
TABLES_STATE = "__tables__"


# Rows of ``st_transform_state`` (tenant 0) remembering each mart's fingerprint for one version of the
# code: compiling every mart's queries to fingerprint them costs more CPU than a build with nothing
# to do, and a run is a new process.
FINGERPRINT_STATE_PREFIX = "__fingerprint__"


def _code_version(dialect: sa.Dialect, marts: tuple[Mart, ...]) -> str:
    """What the mart fingerprints are a function of: the source of the transform package and of every
    module defining a part of a mart, the SQLAlchemy release and the warehouse (dialect, server version)."""
    parts: list[Callable[..., Any]] = []
    for mart in marts:
        parts += [mart.facts, *(derive for _, derive in mart.derived), *(link.entities for link in mart.links)]
    sources = {Path(sqltypes.__file__), *Path(__file__).parent.glob("*.py")}
    sources |= {Path(file) for part in parts if (file := inspect.getsourcefile(part))}
    return _source_digest(f"{sa.__version__}/{dialect.name}/{dialect.server_version_info}", frozenset(sources))


@functools.cache
def _source_digest(salt: str, sources: frozenset[Path]) -> str:
    digest = hashlib.sha256(salt.encode())
    for source in sorted(sources):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _mart_fingerprints(engine: sa.Engine, marts: tuple[Mart, ...], run_id: str) -> dict[str, str]:
    """Each mart's fingerprint, as remembered for this version of the code, or computed and remembered."""
    version = _code_version(engine.dialect, marts)
    names = {mart.name: f"{FINGERPRINT_STATE_PREFIX}/{version}/{mart.table_name}" for mart in marts}
    t = transform_state_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.table_name, t.c.fingerprint).where(t.c.tenant_id == 0, t.c.table_name.in_(names.values()))
        )
        known = {row.table_name: row.fingerprint for row in rows}
    fingerprints = {name: known.get(row) for name, row in names.items()}
    missing = [mart for mart in marts if fingerprints[mart.name] is None]
    if not missing:
        return {name: fp for name, fp in fingerprints.items() if fp is not None}
    with engine.begin() as conn:
        stale = sa.and_(t.c.table_name.like(f"{FINGERPRINT_STATE_PREFIX}/%"), t.c.table_name.not_like(f"%/{version}/%"))
        conn.execute(t.delete().where(t.c.tenant_id == 0, stale))  # earlier versions'
        for mart in missing:
            fingerprints[mart.name] = mart_fingerprint(mart, engine.dialect)
            upsert_state(
                conn,
                t,
                {"tenant_id": 0, "table_name": names[mart.name]},
                {
                    "fingerprint": fingerprints[mart.name],
                    "watermark": None,
                    "row_count": 0,
                    "run_id": run_id,
                    "built_at": datetime.now(UTC),
                },
            )
    return {name: fp for name, fp in fingerprints.items() if fp is not None}


def _index_name(index: sa.Index) -> str:
    assert index.name is not None  # every hub and mart index is created with a name
    return index.name


def _ensure_tables(engine: sa.Engine, hubs: tuple[HubTable, ...], marts: tuple[Mart, ...], run_id: str) -> set[str]:
    """Create or reshape hub and mart tables when their definitions changed; the warehouse's table names.

    Several tenants' first runs may arrive at once: the check and the changes hold the schema-change
    lock, so one creates and the others find the tables made.
    """
    tables = [hub_table(spec) for spec in hubs] + [t for mart in marts for t in mart_tables(mart)]
    ddl = "".join(
        str(CreateTable(t).compile(dialect=engine.dialect)) + repr(sorted(_index_name(i) for i in t.indexes))
        for t in tables
    )
    fingerprint = hashlib.sha256(ddl.encode()).hexdigest()[:16]
    existing = set(sa.inspect(engine).get_table_names())
    with engine.connect() as conn:
        state = _state(conn, 0, TABLES_STATE)
    if state is not None and state.fingerprint == fingerprint and {t.name for t in tables} <= existing:
        return existing
    with schema_change_lock(engine), engine.begin() as conn:
        ensure_hub_tables(conn, hubs)
        ensure_mart_tables(conn, marts)
        upsert_state(
            conn,
            transform_state_table,
            {"tenant_id": 0, "table_name": TABLES_STATE},
            {
                "fingerprint": fingerprint,
                "watermark": None,
                "row_count": len(tables),
                "run_id": run_id,
                "built_at": datetime.now(UTC),
            },
        )
    return set(sa.inspect(engine).get_table_names())


def _changed_ids(
    engine: sa.Engine, hubs: tuple[HubTable, ...], tenant_id: int, existing: set[str], states: dict[str, sa.Row]
) -> dict[str, set[int]]:
    """The ids of the raw records each hub table will reprocess incrementally (hub tables that will
    build in full, or not at all, are left out)."""
    changed: dict[str, set[int]] = {}
    with engine.connect() as conn:
        for spec in hubs:
            raw = raw_table_name_for(spec)
            state = states.get(spec.table_name)
            if (
                raw not in existing
                or state is None
                or state.fingerprint != spec.fingerprint()
                or state.watermark is None
            ):
                continue
            since = _as_utc(state.watermark)
            ids = conn.execute(sql.changed_ids_statement(raw, tenant_id=tenant_id, since=since)).scalars()
            changed[spec.table_name] = set(ids)
    return changed


def _reached(
    engine: sa.Engine, marts: tuple[Mart, ...], tenant_id: int, changed_ids: dict[str, set[int]]
) -> dict[str, set[int]]:
    """Per mart, the entities its links reach from the changed records, as the hub tables stand now."""
    reached: dict[str, set[int]] = {}
    if not any(changed_ids.values()):
        return reached
    with engine.begin() as conn:  # temporary tables live on one connection
        for table, ids in changed_ids.items():
            links = [(mart, link) for mart in marts for link in mart.links if link.table == table]
            if not ids or not links:
                continue
            changed = load_ids(conn, "st_changed_ids", ids)
            for mart, link in links:
                found = conn.execute(entities_reached(link, tenant_id, changed)).scalars()
                reached.setdefault(mart.name, set()).update(i for i in found if i is not None)
            drop(conn, changed)
    return reached


def raw_table_name_for(spec: HubTable, catalogue: Catalogue | None = None) -> str:
    """The raw table a hub table reads."""
    from st_pipeline.servicetitan.catalogue import load_catalogue

    return raw_table_name((catalogue or load_catalogue()).dataset(spec.source))


@overload
def _as_utc(value: datetime | str) -> datetime: ...
@overload
def _as_utc(value: None) -> None: ...
@overload
def _as_utc(value: datetime | str | None) -> datetime | None: ...
def _as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns aggregates of timestamp columns as text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
