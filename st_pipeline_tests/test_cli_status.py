"""`st-pipeline status`: the fleet on one screen, and as JSON for scripts; `st-pipeline sync-log`:
what a tenant's latest runs did.

Four tenants: healthy (synced an hour ago), stale (last success beyond the 6 h SLA), failing (a
dataset whose latest sync failed, credentials rejected, an open incident) and disabled (never synced).
Only the healthy one has a time zone (America/Chicago); the others are flagged for it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from pydantic import SecretStr

from st_pipeline.alerts import Alert, AlertManager
from st_pipeline.cli import main
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.servicetitan.counters import SyncCounters
from st_pipeline.settings import load_settings
from st_pipeline.sync.state import FAILED, SUCCEEDED, DatasetClose, close_dataset, open_log
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import dataset_status_table
from st_pipeline_tests.support import TEST_CHANGE, open_registry, prepared_warehouse

HEALTHY, STALE, FAILING, DISABLED = 7101, 7102, 7103, 7104
NOW = datetime.now(UTC).replace(microsecond=0)
HOUR_AGO = NOW - timedelta(hours=1)
TWO_HOURS_AGO = NOW - timedelta(hours=2)
DAY_AGO = NOW - timedelta(hours=30)


def _st(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), prog_name="st-pipeline")
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def _register() -> None:
    registry = open_registry()
    try:
        for tenant_id, name in (
            (HEALTHY, "Healthy HVAC"),
            (STALE, "Stale Plumbing"),
            (FAILING, "Failing Electric"),
            (DISABLED, "Disabled Roofing"),
        ):
            registry.add(
                tenant_id,
                name,
                f"cid.{tenant_id}",
                SecretStr(f"secret-{tenant_id}"),
                change=TEST_CHANGE,
                time_zone="America/Chicago" if tenant_id == HEALTHY else None,
            )
        registry.set_enabled(DISABLED, False, change=TEST_CHANGE, reason="contract paused")
        registry.flag_needs_credentials(FAILING, "401 from the token endpoint", change=TEST_CHANGE)
        alerts = AlertManager(registry.engine, channels=[])
        alerts.open(
            Alert(
                incident_key=f"run_failure:tenant={FAILING}",
                kind="run_failure",
                title="sync failed",
                reason="crm/customers failed",
                tenant_id=FAILING,
            )
        )
        # Resolved: not open any more, so not counted.
        alerts.open(
            Alert(
                incident_key=f"auth_failure:tenant={FAILING}",
                kind="auth_failure",
                title="credentials",
                reason="401",
                tenant_id=FAILING,
            )
        )
        alerts.resolve(f"auth_failure:tenant={FAILING}")
    finally:
        registry.close()


def _statuses() -> None:
    engine = sa.create_engine(load_settings().warehouse_database_url)
    upgrade(engine)

    def row(tenant_id: int, dataset: str, status: str, ended: datetime, success: datetime | None) -> dict:
        return {
            "tenant_id": tenant_id,
            "dataset": dataset,
            "row_count": 0,
            "last_status": status,
            "last_ended_at": ended,
            "last_success_at": success,
        }

    with engine.begin() as conn:
        conn.execute(
            dataset_status_table.insert(),
            [
                row(HEALTHY, "crm/customers", "succeeded", HOUR_AGO, HOUR_AGO),
                row(HEALTHY, "jpm/jobs", "succeeded", TWO_HOURS_AGO, TWO_HOURS_AGO),
                row(STALE, "crm/customers", "succeeded", DAY_AGO, DAY_AGO),
                # Failed before, succeeded since: not failing.
                row(STALE, "jpm/jobs", "succeeded", DAY_AGO, DAY_AGO),
                row(FAILING, "crm/customers", "failed", HOUR_AGO, TWO_HOURS_AGO),
                row(FAILING, "jpm/jobs", "succeeded", HOUR_AGO, HOUR_AGO),
            ],
        )
    engine.dispose()


@pytest.fixture()
def fleet(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ST_PIPELINE_FRESHNESS_SLA_HOURS", "6")
    _register()
    _statuses()


def test_status_json_gives_each_tenants_state(fleet: None) -> None:
    rows = {r["tenant_id"]: r for r in json.loads(_st("status", "--json").stdout)}
    assert list(rows) == [HEALTHY, STALE, FAILING, DISABLED]
    assert rows[HEALTHY] == {
        "tenant_id": HEALTHY,
        "name": "Healthy HVAC",
        "enabled": True,
        "time_zone": "America/Chicago",
        "needs_credentials": False,
        "last_success": HOUR_AGO.isoformat(),
        "stale": False,
        "failing_datasets": 0,
        "failing_dataset_keys": [],
        "open_incidents": 0,
        "open_incident_keys": [],
    }
    assert rows[STALE] == {
        "tenant_id": STALE,
        "name": "Stale Plumbing",
        "enabled": True,
        "time_zone": None,
        "needs_credentials": False,
        "last_success": DAY_AGO.isoformat(),
        "stale": True,
        "failing_datasets": 0,
        "failing_dataset_keys": [],
        "open_incidents": 0,
        "open_incident_keys": [],
    }
    assert rows[FAILING] == {
        "tenant_id": FAILING,
        "name": "Failing Electric",
        "enabled": True,
        "time_zone": None,
        "needs_credentials": True,
        "last_success": HOUR_AGO.isoformat(),
        "stale": False,
        "failing_datasets": 1,
        "failing_dataset_keys": ["crm/customers"],
        "open_incidents": 1,
        "open_incident_keys": [f"run_failure:tenant={FAILING}"],
    }
    assert rows[DISABLED] == {
        "tenant_id": DISABLED,
        "name": "Disabled Roofing",
        "enabled": False,
        "time_zone": None,
        "needs_credentials": False,
        "last_success": None,
        "stale": False,  # registered just now: within the SLA
        "failing_datasets": 0,
        "failing_dataset_keys": [],
        "open_incidents": 0,
        "open_incident_keys": [],
    }


def test_status_table_has_one_line_per_tenant(fleet: None) -> None:
    lines = _st("status").stdout.splitlines()
    assert lines[0].split() == [
        "tenant",
        "id",
        "state",
        "last",
        "success",
        "(UTC)",
        "fresh",
        "failing",
        "datasets",
        "open",
        "incidents",
        "time",
        "zone",
        "name",
    ]
    by_tenant = {int(line.split()[0]): line.split() for line in lines[1:5]}
    assert list(by_tenant) == [HEALTHY, STALE, FAILING, DISABLED]
    hour, day = f"{HOUR_AGO:%Y-%m-%d %H:%M}".split(), f"{DAY_AGO:%Y-%m-%d %H:%M}".split()
    unset = ["not", "set", "(UTC)"]
    assert by_tenant[HEALTHY] == [str(HEALTHY), "enabled", *hour, "ok", "-", "0", "America/Chicago", "Healthy", "HVAC"]
    assert by_tenant[STALE] == [str(STALE), "enabled", *day, "STALE", "-", "0", *unset, "Stale", "Plumbing"]
    assert by_tenant[FAILING] == [
        str(FAILING),
        "needs",
        "credentials",
        *hour,
        "ok",
        "1:",
        "crm/customers",
        "1",
        *unset,
        "Failing",
        "Electric",
    ]
    assert by_tenant[DISABLED] == [
        str(DISABLED),
        "disabled",
        "never",
        "synced",
        "ok",
        "-",
        "0",
        *unset,
        "Disabled",
        "Roofing",
    ]
    assert lines[-2] == "4 tenants; 1 stale (SLA 6 h); 1 with failing datasets; 1 open incidents"
    assert lines[-1] == (
        f"3 without a time zone, so their days are UTC ({STALE}, {FAILING}, {DISABLED}): set each with "
        "`st-pipeline tenant set-time-zone --tenant ID ZONE` (an IANA name such as America/Los_Angeles)"
    )


def test_status_flags_no_time_zone_once_every_tenant_has_one(fleet: None) -> None:
    registry = open_registry()
    try:
        for tenant_id in (STALE, FAILING, DISABLED):
            registry.set_time_zone(tenant_id, "Europe/Berlin", change=TEST_CHANGE)
    finally:
        registry.close()
    lines = _st("status").stdout.splitlines()
    assert lines[-1] == "4 tenants; 1 stale (SLA 6 h); 1 with failing datasets; 1 open incidents"
    column = lines[0].index("time zone")
    assert [line[column:].split()[0] for line in lines[1:5]] == ["America/Chicago"] + ["Europe/Berlin"] * 3
    zones = [(r["tenant_id"], r["time_zone"]) for r in json.loads(_st("status", "--json").stdout)]
    assert zones == [
        (HEALTHY, "America/Chicago"),
        (STALE, "Europe/Berlin"),
        (FAILING, "Europe/Berlin"),
        (DISABLED, "Europe/Berlin"),
    ]


def test_a_warehouse_without_sync_status_shows_every_tenant_never_synced(local_env: Path) -> None:
    registry = open_registry()
    registry.add(HEALTHY, "Healthy HVAC", "cid.one", SecretStr("secret-one"), change=TEST_CHANGE)
    registry.close()
    # A warehouse nothing has written to yet gets its schema, as a run's would, instead of an SQL error.
    assert _st("sync-log", "--tenant", str(HEALTHY)).stdout == f"no syncs logged for tenant {HEALTHY}\n"
    rows = json.loads(_st("status", "--json").stdout)
    assert [
        (r["tenant_id"], r["last_success"], r["stale"], r["failing_datasets"], r["open_incidents"]) for r in rows
    ] == [(HEALTHY, None, False, 0, 0)]
    assert "never synced" in _st("status").stdout


def test_sync_log_shows_the_latest_run_by_default_and_more_on_request(local_env: Path) -> None:
    catalogue = load_catalogue()
    customers, jobs = catalogue.dataset("crm/customers"), catalogue.dataset("jpm/jobs")
    engine = prepared_warehouse(load_settings().warehouse_database_url, [customers, jobs])
    runs = {
        "run-a-0000": {
            customers: DatasetClose(SUCCEEDED, SyncCounters(records=40, rows_written=40, requests=1), changed=True),
            jobs: DatasetClose(SUCCEEDED, SyncCounters(records=25, rows_written=25, requests=1), changed=True),
        },
        "run-b-0000": {
            customers: DatasetClose(
                FAILED, SyncCounters(requests=8, retries=7), error="ServerError: 503 from /customers"
            ),
            jobs: DatasetClose(SUCCEEDED, SyncCounters(records=3, requests=1)),
        },
        "run-c-0000": {
            customers: DatasetClose(
                SUCCEEDED, SyncCounters(records=5, rows_written=2, requests=2, throttled=1), changed=True
            ),
            jobs: DatasetClose(SUCCEEDED, SyncCounters(records=1, requests=1)),
        },
    }
    for run_id, closes in runs.items():
        log_ids = open_log(engine, run_id, HEALTHY, list(closes), {})
        for dataset, close in closes.items():
            close_dataset(engine, run_id, HEALTHY, dataset.key, log_ids[dataset.key], close)
    engine.dispose()

    def headers(output: str) -> list[str]:
        return [
            line.split(" — ")[0] + " | " + line.split("; ", 1)[1]
            for line in output.splitlines()
            if line.startswith("run ")
        ]

    latest = _st("sync-log", "--tenant", str(HEALTHY)).stdout
    assert headers(latest) == [
        "run run-c-0000 | 2 datasets: 2 succeeded; 6 records, 2 rows written, 3 requests, 0 retries, 1 429s"
    ]
    assert "crm/customers" in latest and "jpm/jobs" not in latest
    assert "1 datasets succeeded without changes (--all lists them)" in latest
    assert "jpm/jobs" in _st("sync-log", "--tenant", str(HEALTHY), "--all").stdout

    two = _st("sync-log", "--tenant", str(HEALTHY), "--runs", "2").stdout
    assert headers(two) == [
        "run run-c-0000 | 2 datasets: 2 succeeded; 6 records, 2 rows written, 3 requests, 0 retries, 1 429s",
        "run run-b-0000 | 2 datasets: 1 failed, 1 succeeded; 3 records, 0 rows written, 9 requests, 7 retries, 0 429s",
    ]
    assert "ServerError: 503 from /customers" in two

    one = _st("sync-log", "--tenant", str(HEALTHY), "--run", "run-a-0000").stdout
    assert headers(one) == [
        "run run-a-0000 | 2 datasets: 2 succeeded; 65 records, 65 rows written, 2 requests, 0 retries, 0 429s"
    ]
    assert "no syncs logged for tenant 4242" in _st("sync-log", "--tenant", "4242").stdout
