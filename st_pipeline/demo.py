"""``st-pipeline demo``: the whole pipeline on a laptop, against the embedded simulator.

Starts the simulator, registers a demo tenant through the same path as ``st-pipeline tenant
add``, materializes every asset of its partition with the ``dagster`` command, and prints the
warehouse's row counts next to the simulator's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.database import open_engine
from st_pipeline.home import DAGSTER_HOME_NAME, KEY_FILE_NAME, create_private_file, ensure_private_dir, secure_home
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, Dataset, load_catalogue
from st_pipeline.settings import load_settings
from st_pipeline.simulator import Simulator, SimulatorConfig
from st_pipeline.sync.state import RUNNING
from st_pipeline.tenants.crypto import generate_key
from st_pipeline.tenants.onboarding import add_tenant
from st_pipeline.tenants.registry import REGISTRY_VARIABLE, Change, TenantRegistry
from st_pipeline.tenants.schema import upgrade_registry
from st_pipeline.warehouse.engine import create_warehouse_engine, describe_url
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import raw_table, sync_log_table

DEMO_TENANT_ID = 1001
# The local instance: SQLite storage, run monitoring and the one-run-per-tenant queue as in production.
LOCAL_DAGSTER_YAML = """telemetry:
  enabled: false
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
  max_runtime_seconds: 21600
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: "dagster/partition"
        value:
          applyLimitPerUniqueValue: true
        limit: 1
"""


def prepare_local_environment() -> dict[str, str]:
    """Environment for a local run: state in ST_PIPELINE_HOME, a local key file, a SQLite Dagster instance,
    each created owner-only."""
    settings = load_settings()
    home = secure_home(settings.home)
    env: dict[str, str] = {"ST_PIPELINE_HOME": str(home)}
    if settings.secret_keys is None:
        key_file = home / KEY_FILE_NAME
        create_private_file(key_file, (generate_key() + "\n").encode())
        env["ST_PIPELINE_SECRET_KEYS_FILE"] = str(key_file)
    dagster_home = ensure_private_dir(settings.dagster_home or home / DAGSTER_HOME_NAME)
    create_private_file(dagster_home / "dagster.yaml", LOCAL_DAGSTER_YAML.encode())
    env["DAGSTER_HOME"] = str(dagster_home)
    os.environ.update(env)
    return env


def run_demo(*, port: int, scale: float) -> int:
    os.umask(0o077)  # what this process and the Dagster run write is private too
    env = prepare_local_environment()
    config = SimulatorConfig(tenants=[SimulatorConfig.demo_tenant(DEMO_TENANT_ID)], scale=scale)
    datasets = load_catalogue().extracted_datasets()
    with Simulator(config, port=port) as sim:
        env.update(
            SERVICETITAN_ENVIRONMENT="custom",
            SERVICETITAN_API_URL=sim.url,
            SERVICETITAN_AUTH_URL=sim.auth_url,
            SERVICETITAN_APP_KEY=config.app_key,
        )
        os.environ.update(env)
        settings = load_settings()
        print(f"simulator on {sim.url}; state in {env['ST_PIPELINE_HOME']}")

        demo_tenant = config.tenants[0]
        # The demo's own state, made by an older checkout, is upgraded as `st-pipeline db upgrade` would.
        registry_engine = open_engine(settings.registry_database_url, variable=REGISTRY_VARIABLE)
        upgrade_registry(registry_engine)
        registry_engine.dispose()
        registry = TenantRegistry.open(settings)
        if demo_tenant.tenant_id not in {t.tenant_id for t in registry.list()}:
            add_tenant(
                registry,
                settings.api(),
                tenant_id=demo_tenant.tenant_id,
                name="Demo Heating & Air",
                client_id=demo_tenant.client_id,
                client_secret=SecretStr(demo_tenant.client_secret),
                change=Change("demo"),
            )
        registry.close()
        import dagster as dg

        from st_pipeline.defs.partitions import add_tenant_partition

        with dg.DagsterInstance.get() as instance:
            add_tenant_partition(instance, DEMO_TENANT_ID)
        engine = create_warehouse_engine(settings.warehouse_database_url)
        upgrade(engine)  # what `st-pipeline db upgrade` does
        log_path = Path(env["ST_PIPELINE_HOME"]) / "demo-run.log"
        print(
            f"tenant {DEMO_TENANT_ID} registered; running the servicetitan_sync job for it "
            f"(Dagster's log: {log_path}) …"
        )
        returncode = _run_sync_job(engine, log_path)
        if returncode != 0:
            engine.dispose()
            print(f"the Dagster run failed; its log is in {log_path}", file=sys.stderr)
            return returncode
        expected = sim.record_counts(DEMO_TENANT_ID)
        print(f"\nwarehouse {describe_url(engine)}, tenant {DEMO_TENANT_ID}:")
        all_equal = _print_counts(engine, datasets, expected)
        _print_models(engine)
        engine.dispose()
    print("\nall counts equal the simulator's." if all_equal else "\ncounts differ from the simulator's!")
    print("Browse the same data and the run in the Dagster UI: make dev  (then open http://127.0.0.1:3000)")
    return 0 if all_equal else 1


def _closed_datasets(engine: sa.Engine, before: int) -> list[sa.Row]:
    """The sync log's closed rows after ``before``. The run creates tables while this reads: SQLite may
    then report that the schema changed under the statement, which a second read does not meet."""
    log = sync_log_table.c
    query = sa.select(sync_log_table).where(log.log_id > before, log.status != RUNNING).order_by(log.ended_at)
    for attempt in range(3):
        try:
            with engine.connect() as conn:
                return list(conn.execute(query).all())
        except sa.exc.OperationalError as exc:
            if "schema has changed" not in str(exc) or attempt == 2:
                raise
    return []


def _run_sync_job(engine: sa.Engine, log_path: Path) -> int:
    """The tenant's ``servicetitan_sync`` run, as a schedule would start it, with Dagster's own output in
    ``log_path``; each dataset is printed as the sync log closes it, then a summary."""
    log = sync_log_table.c
    with engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.coalesce(sa.func.max(log.log_id), 0))).scalar_one()
    dg_command = shutil.which("dg", path=str(Path(sys.executable).parent)) or "dg"
    started = time.monotonic()
    shown: set[int] = set()
    with log_path.open("w") as output:
        run = subprocess.Popen(
            [
                dg_command,
                "launch",
                "--job",
                "servicetitan_sync",
                "--partition",
                str(DEMO_TENANT_ID),
                "-m",
                "st_pipeline.definitions",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        while True:
            finished = run.poll() is not None  # read once more after the run ends
            rows = _closed_datasets(engine, before)
            for row in rows:
                if row.log_id not in shown:
                    shown.add(row.log_id)
                    detail = row.error or f"{row.records} records, {row.rows_written} rows written"
                    print(f"  {len(shown):>3}  {row.dataset:48} {row.status:10} {detail[:80]}")
            if finished:
                break
            time.sleep(0.5)  # a progress display polling the sync log, bounded by the run itself
    with engine.connect() as conn:
        totals = conn.execute(
            sa.select(
                sa.func.count(), sa.func.sum(log.records), sa.func.sum(log.rows_written), sa.func.sum(log.requests)
            ).where(log.log_id > before)
        ).one()
    print(
        f"\n{totals[0]} datasets synced in {time.monotonic() - started:.1f} s: {totals[1] or 0} records received, "
        f"{totals[2] or 0} rows written, {totals[3] or 0} API requests"
    )
    return run.returncode


def _print_counts(engine: sa.Engine, datasets: list[Dataset], expected: dict[str, int]) -> bool:
    """Rows per core asset, then per module for the rest, next to the simulator's counts."""
    from st_pipeline.defs.raw_assets import raw_asset_key

    lines: dict[str, list[int]] = {}
    with engine.connect() as conn:
        for dataset in datasets:
            table = raw_table(dataset)
            rows = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == DEMO_TENANT_ID)
            ).scalar_one()
            label = (
                raw_asset_key(dataset).to_user_string()
                if dataset.key in CORE_DATASETS
                else f"servicetitan/raw/{dataset.module}/… (other)"
            )
            totals = lines.setdefault(label, [0, 0, 0])
            totals[0] += 1
            totals[1] += rows
            totals[2] += expected.get(dataset.key, 0)
    print(f"{'asset':52} {'assets':>6} {'warehouse rows':>15} {'simulator':>10}")
    for label, (assets, rows, truth) in lines.items():
        mark = "" if rows == truth else "  MISMATCH"
        print(f"{label:52} {assets:>6} {rows:>15} {truth:>10}{mark}")
    total_rows, total_truth = sum(v[1] for v in lines.values()), sum(v[2] for v in lines.values())
    print(f"{'total':52} {len(datasets):>6} {total_rows:>15} {total_truth:>10}")
    return all(rows == truth for _, rows, truth in lines.values())


def _print_models(engine: sa.Engine) -> None:
    """Hub table row counts and a few KPI figures of the demo tenant, as the run left them."""
    from st_pipeline.transform.hubs import HUB_TABLES
    from st_pipeline.transform.kpis import headline_kpis, kpi_table
    from st_pipeline.transform.tables import hub_table

    print(f"\nhub tables (tenant {DEMO_TENANT_ID}):")
    with engine.connect() as conn:
        for spec in HUB_TABLES:
            table = hub_table(spec)
            rows = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == DEMO_TENANT_ID)
            ).scalar_one()
            print(f"  {spec.table_name:34} {rows:>8}")
        print("\nKPIs (all days of the simulator's history):")
        for line in kpi_table(headline_kpis(conn, DEMO_TENANT_ID)):
            print(f"  {line}")
