"""Sync state (cursors) and the sync log, in the warehouse database.

A cursor is saved in the transaction that writes the page it covers, so after a crash the next
run resumes exactly after the last committed page. The sync log has one row per (run, tenant,
dataset), updated page by page, so even a killed run leaves a trace of how far it got.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.warehouse.tables import sync_log_table, sync_state_table

RUNNING, SUCCEEDED, FAILED, INTERRUPTED = "running", "succeeded", "failed", "interrupted"
# Not granted to the app for this tenant (403 missing scope): not an error, and not stale.
SKIPPED = "skipped"


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
    where = sa.and_(sync_state_table.c.tenant_id == tenant_id, sync_state_table.c.dataset == dataset.key)
    if not conn.execute(sync_state_table.update().where(where).values(**values)).rowcount:
        conn.execute(sync_state_table.insert().values(tenant_id=tenant_id, dataset=dataset.key, **values))


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
    """Start one log row per dataset; rows a crashed earlier run left ``running`` become ``interrupted``."""
    now = datetime.now(UTC)
    log = sync_log_table.c
    with engine.begin() as conn:
        conn.execute(
            sync_log_table.update()
            .where(log.tenant_id == tenant_id, log.status == RUNNING, log.run_id != run_id)
            .values(status=INTERRUPTED, error="the process stopped before this sync finished")
        )
        ids = {}
        for dataset in datasets:
            ids[dataset.key] = conn.execute(
                sync_log_table.insert()
                .values(
                    run_id=run_id,
                    tenant_id=tenant_id,
                    dataset=dataset.key,
                    status=RUNNING,
                    started_at=now,
                    cursor_before=cursors.get(dataset.key),
                )
                .returning(log.log_id)
            ).scalar_one()
    return ids


def log_page(conn: sa.Connection, log_id: int, *, records: int, quarantined: int, cursor: str | None) -> None:
    log = sync_log_table.c
    values: dict[str, object] = {
        "records": log.records + records,
        "pages": log.pages + 1,
        "quarantined": log.quarantined + quarantined,
    }
    if cursor is not None:
        values["cursor_after"] = cursor
    conn.execute(sync_log_table.update().where(log.log_id == log_id).values(**values))


def close_log(
    engine: sa.Engine,
    log_id: int,
    *,
    status: str,
    requests: int = 0,
    retries: int = 0,
    throttled: int = 0,
    error: str | None = None,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sync_log_table.update()
            .where(sync_log_table.c.log_id == log_id)
            .values(
                status=status,
                ended_at=datetime.now(UTC),
                requests=requests,
                retries=retries,
                throttled=throttled,
                error=error,
            )
        )


def read_log(engine: sa.Engine, tenant_id: int, *, limit: int = 50) -> list[sa.Row]:
    """The most recent sync-log rows of a tenant, newest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(sync_log_table)
                .where(sync_log_table.c.tenant_id == tenant_id)
                .order_by(sync_log_table.c.log_id.desc())
                .limit(limit)
            )
        )
