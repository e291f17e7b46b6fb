"""Sync state (cursors), the sync log and the status of each (tenant, dataset), in the warehouse.

A cursor is saved in the transaction that writes the page it covers, so after a crash the next
run resumes exactly after the last committed page. The sync log has one row per (run, tenant,
dataset), updated page by page, so even a killed run leaves a trace of how far it got; every row
is closed with its true status and counts. ``st_dataset_status`` keeps the latest of each pair
(and the raw table's row count for the tenant, kept by the write path) so that freshness and
alerts read a small indexed table instead of the log's history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from st_pipeline.database import upsert_state
from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.servicetitan.counters import COUNTER_NAMES, SyncCounters
from st_pipeline.warehouse.tables import dataset_status_table, raw_table, sync_log_table, sync_state_table

RUNNING, SUCCEEDED, FAILED, INTERRUPTED = "running", "succeeded", "failed", "interrupted"
# Not granted to the app for this tenant (403 missing scope): not an error, and not stale.
SKIPPED = "skipped"
# Not there for this tenant (404: a module the tenant does not have): not an error, and not stale.
UNAVAILABLE = "unavailable"
# The statuses of a dataset no sync of this tenant can load until something outside changes.
NOT_LOADABLE = (SKIPPED, UNAVAILABLE)
# Stopped unfinished because another dataset's error ended the tenant's run (too many consecutive failures, revoked
# credentials); what it did until then is kept.
CANCELLED = "cancelled"

DEFAULT_LOG_RETENTION = timedelta(days=90)


def load_cursors(engine: sa.Engine, tenant_id: int) -> dict[str, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sync_state_table.c.dataset, sync_state_table.c.cursor).where(
                sync_state_table.c.tenant_id == tenant_id
            )
        )
        return {row.dataset: row.cursor for row in rows}


def save_cursor(conn: sa.Connection, tenant_id: int, dataset: Dataset, cursor: str | None, run_id: str) -> None:
    """Insert or replace the cursor of (tenant, dataset), inside the caller's transaction."""
    values = {
        "cursor_kind": dataset.extraction_endpoint.cursor_kind,
        "cursor": cursor,
        "run_id": run_id,
        "updated_at": datetime.now(UTC),
    }
    upsert_state(conn, sync_state_table, {"tenant_id": tenant_id, "dataset": dataset.key}, values)


def reset_cursors(engine: sa.Engine, tenant_id: int, dataset_keys: Iterable[str] | None = None) -> int:
    """Forget cursors so the next sync reads from the beginning; returns how many were removed."""
    query = sync_state_table.delete().where(sync_state_table.c.tenant_id == tenant_id)
    if dataset_keys is not None:
        query = query.where(sync_state_table.c.dataset.in_(list(dataset_keys)))
    with engine.begin() as conn:
        return conn.execute(query).rowcount


def open_log(
    engine: sa.Engine, run_id: str, tenant_id: int, datasets: list[Dataset], cursors: dict[str, str | None]
) -> dict[str, int]:
    """Start one log row per dataset and make sure each pair has a status row with a known row count.

    Rows a crashed earlier run left ``running`` become ``interrupted``. A row count is counted once,
    the first time a pair is synced (or after an upgrade); from then on the write path keeps it.
    """
    now = datetime.now(UTC)
    log, status = sync_log_table.c, dataset_status_table.c
    with engine.begin() as conn:
        _bookkeeping(conn)
        conn.execute(
            sync_log_table.update()
            .where(log.tenant_id == tenant_id, log.status == RUNNING, log.run_id != run_id)
            .values(status=INTERRUPTED, error="the process stopped before this sync finished", ended_at=now)
        )
        known: dict[str, int] = dict(
            conn.execute(sa.select(status.dataset, status.row_count).where(status.tenant_id == tenant_id))
            .tuples()
            .all()
        )
        for dataset in datasets:
            if known.get(dataset.key, -1) >= 0:
                continue
            table = raw_table(dataset)
            count = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
            ).scalar_one()
            key = {"tenant_id": tenant_id, "dataset": dataset.key}
            upsert_state(conn, dataset_status_table, key, {"row_count": count})
        rows = conn.execute(
            sync_log_table.insert().returning(log.log_id, log.dataset, sort_by_parameter_order=True),
            [
                {
                    "run_id": run_id,
                    "tenant_id": tenant_id,
                    "dataset": dataset.key,
                    "status": RUNNING,
                    "started_at": now,
                    "cursor_before": cursors.get(dataset.key),
                }
                for dataset in datasets
            ],
        ).all()
    return {row.dataset: row.log_id for row in rows}


def log_page(
    conn: sa.Connection,
    log_id: int,
    tenant_id: int,
    dataset_key: str,
    counts: SyncCounters,
    *,
    rows_inserted: int,
    cursor: str | None,
) -> None:
    """A committed page, inside its transaction: its ``counts`` added to the log row's, and the pair's row count.

    (A page that changes nothing is not logged page by page; closing the row writes the totals.)
    """
    log, status = sync_log_table.c, dataset_status_table.c
    values: dict[str, object] = {name: log[name] + value for name, value in _logged_counts(counts).items()}
    if cursor is not None:
        values["cursor_after"] = cursor
    conn.execute(sync_log_table.update().where(log.log_id == log_id).values(**values))
    if rows_inserted:
        conn.execute(
            dataset_status_table.update()
            .where(status.tenant_id == tenant_id, status.dataset == dataset_key)
            .values(row_count=status.row_count + rows_inserted)
        )


def _logged_counts(counts: SyncCounters) -> dict[str, int]:
    """The log row's counter columns: each the counter of its name; ``rows_written`` counts rows flagged deleted too."""
    logged = {name: getattr(counts, name) for name in COUNTER_NAMES if name in sync_log_table.c}
    logged["rows_written"] = counts.rows_written + counts.rows_deleted
    return logged


@dataclass(frozen=True)
class DatasetClose:
    """How a dataset's sync ended, as the log row and the status row record it."""

    status: str
    counts: SyncCounters = field(default_factory=SyncCounters)
    reported_total: int | None = None
    duration_s: float = 0.0
    changed: bool = False
    error: str | None = None
    error_kind: str | None = None


def close_dataset(
    engine: sa.Engine, run_id: str, tenant_id: int, dataset_key: str, log_id: int, close: DatasetClose
) -> None:
    """Close the log row (true status, counts, duration, error) and update the pair's status, together."""
    now = datetime.now(UTC)
    started = now - timedelta(seconds=close.duration_s)
    status = dataset_status_table.c
    latest: dict[str, object] = {
        "last_run_id": run_id,
        "last_status": close.status,
        "last_started_at": started,
        "last_ended_at": now,
        "last_error": close.error,
    }
    if close.status == SUCCEEDED:
        latest["last_success_at"] = now
    if close.changed:
        latest["last_changed_at"] = now
    with engine.begin() as conn:
        _bookkeeping(conn)
        conn.execute(
            sync_log_table.update()
            .where(sync_log_table.c.log_id == log_id)
            .values(
                status=close.status,
                started_at=started,
                ended_at=now,
                **_logged_counts(close.counts),
                reported_total=close.reported_total,
                duration_s=round(close.duration_s, 3),
                error=close.error,
                error_kind=close.error_kind,
            )
        )
        conn.execute(
            dataset_status_table.update()
            .where(status.tenant_id == tenant_id, status.dataset == dataset_key)
            .values(**latest)
        )


def _bookkeeping(conn: sa.Connection) -> None:
    """A transaction of log and status rows only: on PostgreSQL, it need not wait for its flush to disk.

    Losing the last of these to a server crash only leaves a dataset ``running`` (read as
    ``interrupted`` by the next sync); the data and cursors commit synchronously, as always.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))


@dataclass(frozen=True)
class DatasetStatus:
    """Where one (tenant, dataset) stands, as ``st_dataset_status`` keeps it."""

    last_status: str | None
    last_success_at: datetime | None
    last_changed_at: datetime | None
    row_count: int


def dataset_statuses(engine: sa.Engine, tenant_id: int) -> dict[str, DatasetStatus]:
    """Where each dataset of the tenant stands (one indexed read of ``st_dataset_status``)."""
    status = dataset_status_table.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                status.dataset,
                status.last_status,
                status.last_success_at,
                status.last_changed_at,
                status.row_count,
            ).where(status.tenant_id == tenant_id)
        ).all()
    return {
        row.dataset: DatasetStatus(row.last_status, row.last_success_at, row.last_changed_at, row.row_count)
        for row in rows
    }


def row_counts(engine: sa.Engine, tenant_id: int, dataset_keys: Iterable[str] | None = None) -> dict[str, int]:
    """Rows per dataset in the raw tables for the tenant (all, or those named), as the write path counted them."""
    status = dataset_status_table.c
    query = sa.select(status.dataset, status.row_count).where(status.tenant_id == tenant_id)
    if dataset_keys is not None:
        query = query.where(status.dataset.in_(list(dataset_keys)))
    with engine.connect() as conn:
        return dict(conn.execute(query).tuples().all())


def read_log(engine: sa.Engine, tenant_id: int, *, runs: int = 1, run_id: str | None = None) -> list[sa.Row]:
    """The log rows of the tenant's latest ``runs`` syncs (or of one run), newest run first."""
    log = sync_log_table.c
    with engine.connect() as conn:
        if run_id is None:
            latest = (
                sa.select(log.run_id, sa.func.max(log.log_id).label("last"))
                .where(log.tenant_id == tenant_id)
                .group_by(log.run_id)
                .order_by(sa.desc("last"))
                .limit(runs)
                .subquery()
            )
            wanted = sa.select(latest.c.run_id)
        else:
            wanted = sa.select(sa.literal(run_id))
        return list(
            conn.execute(
                sa.select(sync_log_table)
                .where(log.tenant_id == tenant_id, log.run_id.in_(wanted))
                .order_by(log.log_id.desc())
            )
        )


def prune_log(engine: sa.Engine, older_than: timedelta = DEFAULT_LOG_RETENTION, *, now: datetime | None = None) -> int:
    """Delete log rows that started longer ago than ``older_than``; returns how many.

    Status rows keep the latest of each pair, so freshness and alerts lose nothing.
    """
    cutoff = (now or datetime.now(UTC)) - older_than
    with engine.begin() as conn:
        return conn.execute(
            sync_log_table.delete().where(sync_log_table.c.started_at < cutoff, sync_log_table.c.status != RUNNING)
        ).rowcount
