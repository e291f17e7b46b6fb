"""Freshness from the sync log: per dataset over tenants, and per tenant, against an SLA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from st_pipeline.sync.freshness import SyncHistory, assess_datasets, tenant_is_stale
from st_pipeline.sync.state import FAILED, SKIPPED, SUCCEEDED
from st_pipeline.tenants.registry import Tenant
from st_pipeline.warehouse.tables import dataset_status_table
from st_pipeline_tests.support import prepared_warehouse

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SLA = timedelta(hours=6)


def _tenant(tenant_id: int, registered_hours_ago: float) -> Tenant:
    registered = NOW - timedelta(hours=registered_hours_ago)
    return Tenant(tenant_id, f"tenant {tenant_id}", f"cid.{tenant_id}", True, registered, registered)


@pytest.fixture()
def history(tmp_path: Path) -> SyncHistory:
    """Tenant 1: customers synced 1 h ago; jobs synced 10 h ago, then failed 1 h ago; payroll skipped.
    Tenant 2: customers synced 30 h ago."""
    engine = prepared_warehouse(f"sqlite:///{tmp_path / 'w.db'}", [])
    # (tenant, dataset, latest status, hours since it ended, hours since the last success)
    rows = [
        (1, "crm/customers", SUCCEEDED, 1, 1),
        (1, "jpm/jobs", FAILED, 1, 10),
        (1, "payroll/gross-pay-items", SKIPPED, 1, None),
        (2, "crm/customers", SUCCEEDED, 30, 30),
    ]
    with engine.begin() as conn:
        for tenant_id, dataset, status, ended_hours_ago, success_hours_ago in rows:
            conn.execute(
                dataset_status_table.insert().values(
                    tenant_id=tenant_id,
                    dataset=dataset,
                    row_count=0,
                    last_run_id="r",
                    last_status=status,
                    last_ended_at=NOW - timedelta(hours=ended_hours_ago),
                    last_success_at=NOW - timedelta(hours=success_hours_ago) if success_hours_ago else None,
                )
            )
    read = SyncHistory.read(engine)
    engine.dispose()
    return read


def test_history_keeps_the_last_success_and_the_latest_status(history: SyncHistory) -> None:
    assert history.last_success[(1, "jpm/jobs")] == NOW - timedelta(hours=10)
    assert history.latest_status[(1, "jpm/jobs")] == FAILED
    assert (1, "payroll/gross-pay-items") not in history.last_success
    assert history.tenant_last_success(1) == NOW - timedelta(hours=1)
    assert history.tenant_last_success(3) is None


def test_datasets_are_stale_per_tenant_and_skipped_ones_are_left_out(history: SyncHistory) -> None:
    one, two, new = _tenant(1, 100), _tenant(2, 100), _tenant(3, 1)
    everyone = [one, two, new]
    assessed = assess_datasets(
        history,
        {"crm/customers": everyone, "jpm/jobs": everyone, "payroll/gross-pay-items": [one], "crm/leads": []},
        SLA,
        NOW,
    )
    customers = assessed["crm/customers"]
    assert customers.stale == {2: NOW - timedelta(hours=30)}  # tenant 3 registered 1 h ago: not yet stale
    assert customers.checked == [1, 2, 3] and customers.oldest_success == NOW - timedelta(hours=30)
    assert "1 of 3 tenants" in customers.summary(SLA) and "2 (last success 2026-11-27 06:00 UTC)" in customers.summary(
        SLA
    )
    jobs = assessed["jpm/jobs"]  # a later failure does not make a sync fresh
    assert jobs.stale == {1: NOW - timedelta(hours=10), 2: None}
    payroll = assessed["payroll/gross-pay-items"]
    assert payroll.fresh and payroll.not_granted == [1] and payroll.checked == []
    assert assessed["crm/leads"].fresh and assessed["crm/leads"].summary(SLA) == "no enabled tenant syncs this dataset"


def test_a_tenant_is_stale_when_nothing_synced_within_the_sla(history: SyncHistory) -> None:
    assert not tenant_is_stale(history, _tenant(1, 100), SLA, NOW)
    assert tenant_is_stale(history, _tenant(2, 100), SLA, NOW)
    assert not tenant_is_stale(history, _tenant(3, 1), SLA, NOW)
    assert tenant_is_stale(history, _tenant(3, 7), SLA, NOW)


def test_an_empty_log_reads_as_no_history(tmp_path: Path) -> None:
    engine = prepared_warehouse(f"sqlite:///{tmp_path / 'w.db'}", [])
    empty = SyncHistory.read(engine)
    engine.dispose()
    assert empty.last_success == {} and empty.latest_status == {}
