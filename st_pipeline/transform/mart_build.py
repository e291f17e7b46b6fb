"""Building a KPI mart for one tenant, in full or for the facts of some entities (see ``marts``)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.transform.expressions import days_between, unindexed
from st_pipeline.transform.mart_parts import INT, Expression, Link, Mart, Scope
from st_pipeline.transform.marts import MARTS
from st_pipeline.transform.spec import Column
from st_pipeline.transform.types import sql_type
from st_pipeline.warehouse.scratch import analyze, drop, load_ids, recreate, temporary_table

mart_metadata = sa.MetaData()

_defining = threading.Lock()


def mart_table(mart: Mart) -> sa.Table:
    """The SQLAlchemy table of a mart (its key may hold NULLs, e.g. no business unit: an index, not a
    primary key; the ``unique_key`` check watches it)."""
    with _defining:  # defined once per process, whichever thread asks first
        if mart.table_name in mart_metadata.tables:
            return mart_metadata.tables[mart.table_name]
        return _define_mart(mart)


def _define_mart(mart: Mart) -> sa.Table:
    return sa.Table(
        mart.table_name,
        mart_metadata,
        *(sa.Column(c.name, sql_type(c.type)) for c in mart.columns),
        sa.Column("built_at", UtcDateTime(), nullable=False),
        sa.Index(f"ix_{mart.table_name}_key", *mart.key),
    )


def facts_table(mart: Mart) -> sa.Table:
    """The facts a mart sums: one row per (entity, mart key) contribution."""
    name = mart.facts_table_name
    with _defining:
        if name in mart_metadata.tables:
            return mart_metadata.tables[name]
        return _define_facts(mart, name)


def _define_facts(mart: Mart, name: str) -> sa.Table:
    return sa.Table(
        name,
        mart_metadata,
        sa.Column("tenant_id", sa.BigInteger, nullable=False),
        sa.Column("entity_id", sa.BigInteger, nullable=False),
        *(sa.Column(c.name, sql_type(c.type)) for c in (*mart.group, *mart.measures)),
        sa.Index(f"ix_{name[:50]}_entity", "tenant_id", "entity_id"),
        sa.Index(f"ix_{name[:50]}_group", "tenant_id", *(c.name for c in mart.group)),
    )


def mart_tables(mart: Mart) -> list[sa.Table]:
    return [mart_table(mart), facts_table(mart)]


@dataclass
class MartBuild:
    """One mart built for one tenant."""

    table: str
    row_count: int
    headline: dict[str, float]
    # "full"; "incremental": the facts of ``entities`` entities, ``groups`` rows re-summed; "unchanged"
    mode: str = "full"
    entities: int = 0
    groups: int = 0


def _group_names(mart: Mart) -> list[str]:
    return [c.name for c in mart.group]


def _measure_names(mart: Mart) -> list[str]:
    return [c.name for c in mart.measures]


def _fill_facts(mart: Mart, scope: Scope) -> sa.Insert:
    """INSERT the scope's facts into the mart's facts table."""
    facts = facts_table(mart)
    query = mart.facts(scope).subquery("q")
    names = ["entity_id", *_group_names(mart), *_measure_names(mart)]
    select = sa.select(sa.literal(scope.tenant_id, sa.BigInteger()), *(query.c[n] for n in names))
    return facts.insert().from_select(["tenant_id", *names], select)


def _sum(column: Column, value: Expression) -> Expression:
    """SUM of a measure; counts stay 64-bit integers (PostgreSQL sums bigints as numeric)."""
    total = sa.func.sum(value)
    return sa.cast(total, sa.BigInteger()) if column.type == INT else total


def _derived(mart: Mart, sums: Mapping[str, Expression]) -> list[Expression]:
    return [derive(sums) for _, derive in mart.derived]


def _summed(mart: Mart, tenant_id: int, built_at: datetime) -> sa.Select[Any]:
    """The tenant's mart rows from its facts: sums per key, then the derived columns."""
    facts = facts_table(mart)
    group = [facts.c[n] for n in _group_names(mart)]
    sums = {m.name: _sum(m, facts.c[m.name]) for m in mart.measures}
    return (
        sa.select(
            sa.literal(tenant_id, sa.BigInteger()),
            *group,
            *sums.values(),
            *_derived(mart, sums),
            sa.literal(built_at, UtcDateTime()),
        )
        .where(facts.c.tenant_id == tenant_id)
        .group_by(*group)
    )


def _same_group(mart: Mart, left: sa.FromClause, right: sa.FromClause) -> ColumnElement[bool]:
    """``left`` and ``right`` have the same mart key (NULL-safe after the first column, never NULL)."""
    first, *rest = _group_names(mart)
    return sa.and_(left.c[first] == right.c[first], *(left.c[n].is_not_distinct_from(right.c[n]) for n in rest))


def _column_names(mart: Mart) -> list[str]:
    """The columns a build inserts (the trailing ones are set after, by ``_roll``)."""
    trailing = {c.name for c, _ in mart.trailing}
    return [*(c.name for c in mart.columns if c.name not in trailing), "built_at"]


def _roll(conn: sa.Connection, mart: Mart, tenant_id: int) -> None:
    """Compute the trailing columns of every row of the tenant from the rows of its window."""
    if mart.trailing:
        conn.execute(_roll_statement(mart, tenant_id))


def _roll_statement(mart: Mart, tenant_id: int) -> sa.Update:
    table = mart_table(mart)
    window = table.alias("w")

    def window_sum(measure: str) -> Expression:
        return (
            sa.select(sa.func.sum(window.c[measure]))
            .where(
                window.c.tenant_id == table.c.tenant_id,
                window.c.day <= table.c.day,
                sa.true() if mart.window_days is None else days_between(table.c.day, window.c.day) < mart.window_days,
            )
            .scalar_subquery()
        )

    row = {m.name: table.c[m.name] for m in mart.measures}
    windows = {m.name: window_sum(m.name) for m in mart.measures}
    values = {c.name: compute(row, windows) for c, compute in mart.trailing}
    return table.update().where(table.c.tenant_id == tenant_id).values(values)


def build_mart(
    conn: sa.Connection,
    mart: Mart,
    tenant_id: int,
    *,
    as_of: date,
    built_at: datetime,
    entities: set[int] | None = None,
    time_zone: str = "UTC",
) -> MartBuild:
    """Build a mart for one tenant: in full, or (``entities``) for the facts of those entities only;
    days in the tenant's ``time_zone``."""
    table, facts = mart_table(mart), facts_table(mart)
    if entities is None:
        conn.execute(facts.delete().where(facts.c.tenant_id == tenant_id))
        conn.execute(_fill_facts(mart, Scope(tenant_id, as_of, time_zone=time_zone)))
        analyze(conn, facts)
        conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
        conn.execute(table.insert().from_select(_column_names(mart), _summed(mart, tenant_id, built_at)))
        _roll(conn, mart, tenant_id)
        return _finish(conn, mart, tenant_id, MartBuild(mart.table_name, 0, {}))
    build = MartBuild(mart.table_name, 0, {}, mode="incremental", entities=len(entities))
    build.groups = _apply_change(
        conn, mart, Scope(tenant_id, as_of, load_ids(conn, "st_mart_entities", entities), time_zone), built_at
    )
    _roll(conn, mart, tenant_id)
    return _finish(conn, mart, tenant_id, build)


def _apply_change(conn: sa.Connection, mart: Mart, scope: Scope, built_at: datetime) -> int:
    """Recompute the facts of the scope's entities and carry the change into the mart; the mart rows changed.

    The entities' old facts are subtracted from the mart rows and their new facts added
    (``st_delta``, summed per key into ``st_change``); rows left without facts go, new keys come
    in, and the derived columns of the changed rows are computed again. The work follows the
    number of changed entities, not the size of the mart.
    """
    assert scope.entities is not None
    target, facts = mart_table(mart), facts_table(mart)
    group, measures = _group_names(mart), _measure_names(mart)

    def scratch(name: str, columns: tuple[Column, ...], index: tuple[str, ...] = ()) -> sa.Table:
        return recreate(
            conn, temporary_table(name, *(sa.Column(c.name, sql_type(c.type)) for c in columns), index=index)
        )

    delta = scratch("st_delta", (*mart.group, *mart.measures))
    change = scratch("st_change", (*mart.group, *mart.measures), index=tuple(group))  # looked up per mart row
    emptied = scratch("st_emptied", mart.group)
    theirs = sa.and_(facts.c.tenant_id == scope.tenant_id, facts.c.entity_id.in_(sa.select(scope.entities.c.id)))
    fact_group = [facts.c[n] for n in group]
    # Grouped by an unindexed key: SQLite would otherwise walk the tenant's facts in the group index's
    # order (to spare a sort) instead of looking the few entities' facts up by entity.
    by_group = [unindexed(fact_group[0]), *fact_group[1:]]
    old = sa.select(*fact_group, *(-sa.func.sum(facts.c[m]) for m in measures)).where(theirs).group_by(*by_group)
    conn.execute(delta.insert().from_select([*group, *measures], old))
    conn.execute(facts.delete().where(theirs))
    conn.execute(_fill_facts(mart, scope))
    new = sa.select(*fact_group, *(sa.func.sum(facts.c[m]) for m in measures)).where(theirs).group_by(*by_group)
    conn.execute(delta.insert().from_select([*group, *measures], new))
    delta_group = [delta.c[n] for n in group]
    net = sa.select(*delta_group, *(sa.func.sum(delta.c[m]) for m in measures)).group_by(*delta_group)
    conn.execute(change.insert().from_select([*group, *measures], net))
    changed_rows = conn.execute(sa.select(sa.func.count()).select_from(change)).scalar_one()
    analyze(conn, change)

    # Existing rows: add the change, and derive again from the new sums (SET reads the old values).
    after = {m: target.c[m] + change.c[m] for m in measures}
    derived_after = {c.name: derive(after) for c, derive in mart.derived}
    conn.execute(
        target.update()
        .where(target.c.tenant_id == scope.tenant_id, _same_group(mart, target, change))
        .values({**after, **derived_after, "built_at": built_at})
    )
    # New keys.
    existing = target.alias("t")
    new_sums = {m: change.c[m] for m in measures}
    new_rows = sa.select(
        sa.literal(scope.tenant_id, sa.BigInteger()),
        *(change.c[n] for n in group),
        *new_sums.values(),
        *_derived(mart, new_sums),
        sa.literal(built_at, UtcDateTime()),
    ).where(~sa.exists().where(existing.c.tenant_id == scope.tenant_id, _same_group(mart, existing, change)))
    conn.execute(target.insert().from_select(_column_names(mart), new_rows))
    # Keys left without facts (found from the change, then removed).
    without_facts = sa.select(*(change.c[n] for n in group)).where(
        ~sa.exists().where(facts.c.tenant_id == scope.tenant_id, _same_group(mart, facts, change))
    )
    conn.execute(emptied.insert().from_select(group, without_facts))
    if conn.execute(sa.select(sa.func.count()).select_from(emptied)).scalar_one():
        first = group[0]
        conn.execute(
            target.delete().where(
                target.c.tenant_id == scope.tenant_id,
                target.c[first].in_(sa.select(emptied.c[first])),
                sa.exists().where(_same_group(mart, target, emptied)),
            )
        )
    drop(conn, emptied, delta, change)
    return int(changed_rows)


def current_mart(conn: sa.Connection, mart: Mart, tenant_id: int) -> MartBuild:
    """A mart as it stands for the tenant (nothing it reads changed): its rows and headline figures."""
    return _finish(conn, mart, tenant_id, MartBuild(mart.table_name, 0, {}, mode="unchanged"))


def entities_reached(link: Link, tenant_id: int, changed_ids: sa.Table) -> sa.Select[Any]:
    """The ids of the mart entities a link reaches from the changed rows (ids in ``changed_ids``)."""
    return link.entities(tenant_id, sa.select(changed_ids.c.id))


def _finish(conn: sa.Connection, mart: Mart, tenant_id: int, build: MartBuild) -> MartBuild:
    table = mart_table(mart)
    build.row_count = conn.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
    ).scalar_one()
    build.headline = _headline(conn, mart, tenant_id)
    return build


def _headline(conn: sa.Connection, mart: Mart, tenant_id: int) -> dict[str, float]:
    """The mart's headline figures: sums over the last N days with data (or all rows), as floats for plots."""
    table = mart_table(mart)
    figures: dict[str, float] = {}
    for label, column, days in mart.headline:
        query = sa.select(sa.func.sum(table.c[column])).where(table.c.tenant_id == tenant_id)
        if days:
            latest = conn.execute(sa.select(sa.func.max(table.c.day)).where(table.c.tenant_id == tenant_id)).scalar()
            if latest is None:
                figures[label] = 0.0
                continue
            if isinstance(latest, str):
                latest = date.fromisoformat(latest)
            query = query.where(table.c.day > latest - timedelta(days=days))
        figures[label] = float(conn.execute(query).scalar() or 0)
    return figures


def mart_fingerprint(mart: Mart, dialect: sa.Dialect) -> str:
    """Changes whenever the mart's columns or queries change (then it is rebuilt in full for every tenant).

    The queries are compiled for a fixed tenant and day; their parameters (the constants the
    queries compare with) are part of the fingerprint beside the SQL. (Compiling them costs; the
    build remembers the result per version of the code: ``build._mart_fingerprints``.)
    """
    tenant_id, day, at = 0, date(2000, 1, 1), datetime(2000, 1, 1, tzinfo=UTC)
    ids = temporary_table("st_changed_ids", sa.Column("id", sa.BigInteger))
    queries = [
        _summed(mart, tenant_id, at),
        mart.facts(Scope(tenant_id, day)),
        *(entities_reached(link, tenant_id, ids) for link in mart.links),
        *([_roll_statement(mart, tenant_id)] if mart.trailing else []),
    ]
    compiled = [query.compile(dialect=dialect) for query in queries]
    shape = repr(
        (
            [(c.name, c.type.value) for c in mart.columns],
            mart.key,
            [(str(c), sorted(c.params.items(), key=lambda item: item[0])) for c in compiled],
        )
    )
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


def ensure_mart_tables(conn: sa.Connection, marts: tuple[Mart, ...] = MARTS) -> None:
    """Create missing mart and facts tables; recreate one whose columns no longer match its definition.

    Runs in the caller's transaction, inside ``schema_change_lock``.
    """
    from st_pipeline.warehouse.access import secure_tables

    inspector = sa.inspect(conn)
    existing = set(inspector.get_table_names())
    created = False
    for mart in marts:
        for table in mart_tables(mart):
            if table.name in existing:
                if [c["name"] for c in inspector.get_columns(table.name)] == [c.name for c in table.columns]:
                    continue
                table.drop(conn)
            table.create(conn)
            created = True
    if created:
        secure_tables(conn)
