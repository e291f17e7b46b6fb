"""The production configuration, end to end, without Docker: the repository's dagster.yaml on
PostgreSQL, ``dagster api grpc``, ``dagster-webserver`` and ``dagster-daemon`` as real processes,
three tenants onboarded with the CLI against the simulator, and backfills launched through the
webserver's GraphQL API, as the UI launches them: the sync job over the three partitions, then one
raw asset (``servicetitan/raw/crm/customers``) over the three, which syncs that dataset alone.

It asserts the warehouse rows in PostgreSQL, the runs and materializations in Dagster's PostgreSQL
storage, that every raw, hub and mart asset the UI lists can be materialized, and that no two runs
of one tenant overlapped; its databases and processes go with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.crypto import generate_key
from st_pipeline.warehouse.tables import raw_table, sync_log_table
from st_pipeline_tests.support import (
    REPO_ROOT,
    assert_warehouse_equals_ground_truth,
    free_port,
    materializations,
    wait_for,
)

BIN = Path(sys.executable).parent
TENANTS = [
    SimulatedTenant(tenant_id=9601 + i, client_id=f"cid.prod{i}", client_secret=f"cs1.prod-secret-{i}")
    for i in range(3)
]
LOCATION = "st_pipeline"
BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}
"""
ASSET_NODES = "query { assetNodes { assetKey { path } isExecutable } }"
CUSTOMERS, LOCATIONS = (load_catalogue().dataset(key) for key in ("crm/customers", "crm/locations"))
CUSTOMERS_KEY = ["servicetitan", "raw", "crm", "customers"]
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _launch_backfill(graphql: str, params: dict) -> str:
    answer = httpx.post(graphql, timeout=60, json={"query": BACKFILL, "variables": {"params": params}}).json()
    launched = answer["data"]["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def _backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})))


def _backfill_done(instance: dg.DagsterInstance, backfill_id: str, partitions: list[str]) -> Callable[[], bool]:
    def done() -> bool:
        runs = _backfill_runs(instance, backfill_id)
        return {r.tags["dagster/partition"] for r in runs} == set(partitions) and all(
            r.status in FINISHED for r in runs
        )

    return done


@pytest.fixture()
def production(
    tmp_path: Path, local_env: Path, fresh_postgres: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, str], Simulator, str]]:
    """Environment of a production deployment: Dagster, warehouse and registry each in a PostgreSQL database."""
    dagster_url, warehouse_url, registry_url = (sa.make_url(fresh_postgres()) for _ in range(3))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    config = SimulatorConfig(tenants=TENANTS, seed=21, scale=0.01)
    with Simulator(config) as sim:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "DAGSTER_PG_HOST": dagster_url.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(dagster_url.port or 5432),
            "DAGSTER_PG_USER": dagster_url.username or "postgres",
            "DAGSTER_PG_PASSWORD": dagster_url.password or "",
            "DAGSTER_PG_DB": dagster_url.database or "",
            "ST_PIPELINE_WAREHOUSE_URL": warehouse_url.render_as_string(hide_password=False),
            "ST_PIPELINE_REGISTRY_URL": registry_url.render_as_string(hide_password=False),
            "ST_PIPELINE_SECRET_KEYS": generate_key(),
            "SERVICETITAN_ENVIRONMENT": "custom",
            "SERVICETITAN_API_URL": sim.url,
            "SERVICETITAN_AUTH_URL": sim.auth_url,
            "SERVICETITAN_APP_KEY": config.app_key,
        }
        for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
            monkeypatch.setenv(name, env[name])  # this process reads the same instance
        yield env, sim, str(dagster_home)


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [str(BIN / "st-pipeline"), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _start(env: dict[str, str], *command: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(list(command), env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)


def test_production_services_run_graphql_backfills_of_the_job_and_of_one_raw_asset(
    production: tuple[dict[str, str], Simulator, str], tmp_path: Path
) -> None:
    env, sim, dagster_home = production
    _cli(env, "db", "upgrade")
    for tenant in TENANTS:
        _cli(
            env,
            "tenant",
            "add",
            "--tenant",
            str(tenant.tenant_id),
            "--name",
            f"Prod {tenant.tenant_id}",
            "--client-id",
            tenant.client_id,
            stdin=tenant.client_secret + "\n",
        )

    grpc_port, web_port = free_port(), free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {grpc_port}\n      location_name: {LOCATION}\n"
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(
            _start(
                env,
                str(BIN / "dagster"),
                "api",
                "grpc",
                "-m",
                "st_pipeline.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(grpc_port),
                log=tmp_path / "grpc.log",
            )
        )

        def grpc_serving() -> bool:
            check = subprocess.run(
                [str(BIN / "dagster"), "api", "grpc-health-check", "--port", str(grpc_port)],
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
            return check.returncode == 0

        wait_for(grpc_serving, "the code server", processes)
        processes.append(
            _start(
                env,
                str(BIN / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(web_port),
                "-w",
                str(workspace),
                log=tmp_path / "webserver.log",
            )
        )
        processes.append(
            _start(env, str(BIN / "dagster-daemon"), "run", "-w", str(workspace), log=tmp_path / "daemon.log")
        )
        graphql = f"http://127.0.0.1:{web_port}/graphql"

        def webserver_up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{web_port}/server_info", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(webserver_up, "the webserver", processes)
        partitions = [str(t.tenant_id) for t in TENANTS]
        with dg.DagsterInstance.from_config(dagster_home) as instance:
            # The onboarding sensor (run by the daemon) turns registered tenants into partitions.
            wait_for(
                lambda: set(partitions) <= set(instance.get_dynamic_partitions("tenants")),
                "the onboarding sensor to add the three partitions",
                processes,
            )
            backfill_id = _launch_backfill(
                graphql,
                {
                    "selector": {
                        "partitionSetName": "servicetitan_sync_partition_set",
                        "repositorySelector": {"repositoryName": "__repository__", "repositoryLocationName": LOCATION},
                    },
                    "partitionNames": partitions,
                },
            )
            wait_for(_backfill_done(instance, backfill_id, partitions), "the backfill's runs to finish", processes)
            runs = _backfill_runs(instance, backfill_id)
            assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 3, [(r.run_id, r.status) for r in runs]
            assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(partitions)
            assert {r.job_name for r in runs} == {"servicetitan_sync"}
            for run in runs:  # materializations in Dagster's PostgreSQL event log
                keys = {m.asset_key for m in materializations(instance, run.run_id)}
                assert dg.AssetKey(["servicetitan", "tenant_sync"]) in keys
                assert dg.AssetKey(["servicetitan", "raw", "crm", "customers"]) in keys
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            # No two runs of one tenant overlapped (the backfill's and the onboarding sensor's alike).
            for partition in partitions:
                records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/partition": partition}))
                spans = sorted((r.start_time, r.end_time) for r in records if r.start_time is not None)
                assert all(end is not None for _, end in spans)
                for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                    assert end is not None and end <= start, f"two runs of tenant {partition} overlapped"

            # Every raw, hub and mart asset the UI lists has a "Materialize" button.
            nodes = httpx.post(graphql, timeout=60, json={"query": ASSET_NODES}).json()["data"]["assetNodes"]
            layers = [
                n
                for n in nodes
                if n["assetKey"]["path"][:2]
                in (["servicetitan", "raw"], ["servicetitan", "hub"], ["servicetitan", "mart"])
            ]
            assert len(layers) >= 134 + 24 + 8
            assert [n["assetKey"]["path"] for n in layers if not n["isExecutable"]] == []

            # One dataset changed for every tenant, another too: a backfill of the first's raw asset
            # over the three tenants syncs it alone.
            changed = {
                t.tenant_id: sim.apply_changes(t.tenant_id, CUSTOMERS.key, updated=2)["updated"] for t in TENANTS
            }
            untouched = {
                t.tenant_id: sim.apply_changes(t.tenant_id, LOCATIONS.key, updated=2)["updated"] for t in TENANTS
            }
            one_dataset = _launch_backfill(
                graphql, {"assetSelection": [{"path": CUSTOMERS_KEY}], "partitionNames": partitions}
            )
            wait_for(_backfill_done(instance, one_dataset, partitions), "the raw asset's backfill to finish", processes)
            asset_runs = _backfill_runs(instance, one_dataset)
            assert [r.status for r in asset_runs] == [dg.DagsterRunStatus.SUCCESS] * 3, [
                (r.run_id, r.status) for r in asset_runs
            ]
            for run in asset_runs:
                assert {m.asset_key for m in materializations(instance, run.run_id)} == {dg.AssetKey(CUSTOMERS_KEY)}
        for tenant in TENANTS:
            assert_warehouse_equals_ground_truth(
                env["ST_PIPELINE_WAREHOUSE_URL"],
                sim,
                tenant.tenant_id,
                [d for d in load_catalogue().extracted_datasets() if d != LOCATIONS],
            )
        engine = sa.create_engine(env["ST_PIPELINE_WAREHOUSE_URL"])
        customers, locations = raw_table(CUSTOMERS), raw_table(LOCATIONS)
        with engine.connect() as conn:
            hubs = conn.execute(sa.text("select count(distinct tenant_id) from hub_customers")).scalar_one()
            synced = set(
                conn.execute(
                    sa.select(sync_log_table.c.dataset).where(
                        sync_log_table.c.run_id.in_([r.run_id for r in asset_runs])
                    )
                ).scalars()
            )
            for tenant in TENANTS:
                truth = {r["id"]: r for r in sim.ground_truth(tenant.tenant_id, LOCATIONS.key)}
                stored = dict(
                    conn.execute(
                        sa.select(locations.c.id, locations.c.payload).where(
                            locations.c.tenant_id == tenant.tenant_id, locations.c.id.in_(untouched[tenant.tenant_id])
                        )
                    )
                    .tuples()
                    .all()
                )
                assert all(stored[i] != truth[i] for i in untouched[tenant.tenant_id])  # not synced again
                stored = dict(
                    conn.execute(
                        sa.select(customers.c.id, customers.c.payload).where(
                            customers.c.tenant_id == tenant.tenant_id, customers.c.id.in_(changed[tenant.tenant_id])
                        )
                    )
                    .tuples()
                    .all()
                )
                truth = {r["id"]: r for r in sim.ground_truth(tenant.tenant_id, CUSTOMERS.key)}
                assert all(stored[i] == truth[i] for i in changed[tenant.tenant_id])
        engine.dispose()
        assert hubs == 3
        assert synced == {CUSTOMERS.key}
        assert len(load_catalogue().extracted_datasets()) > 100
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
