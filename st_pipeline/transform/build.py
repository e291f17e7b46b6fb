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

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import Catalogue
from st_pipeline.transform import sql
from st_pipeline.transform.hubs import HUB_TABLES
from st_pipeline.transform.marts import MARTS, Mart, MartBuild, build_mart, ensure_mart_tables, mart_fingerprint
from st_pipeline.transform.spec import HubTable
from st_pipeline.transform.tables import ensure_hub_tables
from st_pipeline.warehouse.tables import raw_table_name, transform_state_table


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


def _save_state(conn: sa.Connection, tenant_id: int, spec: HubTable, watermark: datetime | None,
                row_count: int, run_id: str, at: datetime) -> None:
    t = transform_state_table
    conn.execute(t.delete().where(t.c.tenant_id == tenant_id, t.c.table_name == spec.table_name))
    conn.execute(t.insert().values(
        tenant_id=tenant_id, table_name=spec.table_name, fingerprint=spec.fingerprint(), watermark=watermark,
        row_count=row_count, run_id=run_id, built_at=at,
    ))


def _execute(conn: sa.Connection, statement: str, **params: object) -> sa.CursorResult[object]:
    types = sql.bind_types()
    query = sa.text(statement).bindparams(*(sa.bindparam(k, type_=types[k]) for k in params if k in types))
    return conn.execute(query, params)


def _write(conn: sa.Connection, statement: str, **params: object) -> int:
    """Run an INSERT or DELETE; the rows it changed (SQLite's driver does not count ``WITH … INSERT``)."""
    result = _execute(conn, statement, **params)
    if conn.dialect.name == "sqlite":
        return int(conn.execute(sa.text("SELECT changes()")).scalar_one())
    return result.rowcount


def build_hub(engine: sa.Engine, spec: HubTable, tenant_id: int, run_id: str, *, full: bool = False,
              existing_tables: set[str] | None = None) -> HubBuild:
    """Build one hub table for one tenant; see the module's docstring."""
    started = time.monotonic()
    dialect = engine.dialect.name
    raw = raw_table_name_for(spec)
    if existing_tables is None:
        existing_tables = set(sa.inspect(engine).get_table_names())
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        state = _state(conn, tenant_id, spec.table_name)
        if raw not in existing_tables:
            # The source was never synced (scope not granted, dataset disabled): the table stays as
            # it is, empty for a new tenant, and says why.
            count = state.row_count if state is not None else 0
            return HubBuild(spec.table_name, "missing_source", row_count=count,
                            note=f"{spec.source} has not been synced for this tenant")
        watermark = conn.execute(
            sa.text(f"SELECT max(extracted_at) FROM {raw} WHERE tenant_id = :tenant_id"), {"tenant_id": tenant_id}
        ).scalar()
        watermark = _as_utc(watermark)
        total = conn.execute(sa.text(f"SELECT count(*) FROM {raw} WHERE tenant_id = :tenant_id"),
                             {"tenant_id": tenant_id}).scalar_one()
        incremental = (not full and state is not None and state.fingerprint == spec.fingerprint()
                       and state.watermark is not None)
        at = datetime.now(UTC)
        if incremental:
            since = _as_utc(state.watermark)
            changed = _execute(conn, sql.changed_count_statement(raw), tenant_id=tenant_id, since=since).scalar_one()
            if changed == 0:
                return HubBuild(spec.table_name, "unchanged", 0, total, row_count=state.row_count,
                                duration_s=time.monotonic() - started)
            deleted = _write(conn, sql.delete_statement(spec, raw, incremental=True), tenant_id=tenant_id, since=since)
            inserted = _write(conn, sql.insert_statement(spec, raw, dialect, incremental=True),
                              tenant_id=tenant_id, since=since, built_at=at)
            row_count = state.row_count - deleted + inserted
            mode = "incremental"
        else:
            changed = total
            deleted = _write(conn, sql.delete_statement(spec, raw, incremental=False), tenant_id=tenant_id)
            inserted = _write(conn, sql.insert_statement(spec, raw, dialect, incremental=False),
                              tenant_id=tenant_id, built_at=at)
            row_count = inserted
            mode = "full"
        _save_state(conn, tenant_id, spec, watermark, row_count, run_id, at)
    return HubBuild(spec.table_name, mode, changed, total, deleted, inserted, row_count, time.monotonic() - started)


def build_tenant(engine: sa.Engine, tenant_id: int, run_id: str, *, full: bool = False,
                 hubs: tuple[HubTable, ...] = HUB_TABLES, marts: tuple[Mart, ...] = MARTS,
                 as_of: date | None = None) -> TenantBuild:
    """Build a tenant's hub tables, then rebuild the marts that read a hub table that changed.

    A mart is also rebuilt when its definition changed since its last build, or on ``full``.
    ``as_of`` (default: today, UTC) is the day snapshot marts (receivables) are taken on.
    """
    started = time.monotonic()
    ensure_hub_tables(engine, hubs)
    ensure_mart_tables(engine, marts)
    existing = set(sa.inspect(engine).get_table_names())
    result = TenantBuild(tenant_id)
    for spec in hubs:
        result.hubs.append(build_hub(engine, spec, tenant_id, run_id, full=full, existing_tables=existing))
    changed = set(result.changed_tables)
    at = datetime.now(UTC)
    day = as_of or at.date()
    dialect = engine.dialect.name
    for mart in marts:
        with engine.begin() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
            state = _state(conn, tenant_id, mart.table_name)
            fingerprint = mart_fingerprint(mart, dialect)
            stale = state is None or state.fingerprint != fingerprint or bool(changed & set(mart.reads))
            if not (full or stale):
                continue
            built = build_mart(conn, mart, tenant_id, as_of=day, built_at=at)
            t = transform_state_table
            conn.execute(t.delete().where(t.c.tenant_id == tenant_id, t.c.table_name == mart.table_name))
            conn.execute(t.insert().values(tenant_id=tenant_id, table_name=mart.table_name, fingerprint=fingerprint,
                                           watermark=None, row_count=built.row_count, run_id=run_id, built_at=at))
        result.marts.append(built)
    result.duration_s = time.monotonic() - started
    return result


def raw_table_name_for(spec: HubTable, catalogue: Catalogue | None = None) -> str:
    """The raw table a hub table reads."""
    from st_pipeline.servicetitan.catalogue import load_catalogue

    return raw_table_name((catalogue or load_catalogue()).dataset(spec.source))


def _as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns aggregates of timestamp columns as text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
