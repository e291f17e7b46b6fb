"""Helpers shared by the tests: register tenants, materialize a tenant, compare with the simulator."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import sqlalchemy as sa
from dagster_shared.error import SerializableErrorInfo
from pydantic import SecretStr

from st_pipeline.defs.partitions import add_tenant_partition
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY
from st_pipeline.defs.resources import ServiceTitanResource, TenantRegistryResource, WarehouseResource
from st_pipeline.defs.schedules import TENANT_SYNC_OP
from st_pipeline.defs.tenant_sync import tenant_sync
from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.timestamps import parse_timestamp
from st_pipeline.settings import load_settings
from st_pipeline.simulator import SimulatedTenant, Simulator
from st_pipeline.tenants.registry import Change, TenantRegistry
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import raw_table

TEST_CHANGE = Change("test", actor="pytest")
REPO_ROOT = Path(__file__).resolve().parents[1]
# Variables that configure st_pipeline, Dagster or ServiceTitan: a test of a new user's setup clears them.
CONFIGURATION_PREFIXES = ("ST_PIPELINE_", "DAGSTER_", "SERVICETITAN_")
T = TypeVar("T")


def copy_project(destination: Path) -> Path:
    """A copy of the checkout's sources at ``destination``, without its venv, state, caches or builds."""
    import shutil

    shutil.copytree(
        REPO_ROOT,
        destination,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            ".st_pipeline",
            "__pycache__",
            ".pytest_cache",
            "*.egg-info",
            "build",
            "dist",
            "tmp*",
        ),
    )
    return destination


def unconfigured_environment() -> dict[str, str]:
    """This process's environment without any st_pipeline, Dagster or ServiceTitan variable."""
    return {name: value for name, value in os.environ.items() if not name.startswith(CONFIGURATION_PREFIXES)}


def free_port() -> int:
    """A TCP port nothing listens on right now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], Any], what: str, processes: Sequence[subprocess.Popen], deadline_s: float = 300
) -> Any:
    """Poll another process's progress until ``condition()`` is truthy, and return that value; fail if
    one of ``processes`` died or ``deadline_s`` passed."""
    import pytest

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for process in processes:
            assert process.poll() is None, f"{process.args!r} exited with {process.returncode}"
        time.sleep(1)  # waiting on other processes, not synchronising threads
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def deployment(registry_url: str | None = None, warehouse_url: str | None = None) -> Iterator[None]:
    """The deployment's registry and warehouse URLs (environment variables), for the block's duration.

    They are deployment configuration: resources read them from the environment, never from config.
    """
    if registry_url or warehouse_url:  # outside local mode both are named; the other keeps its local file
        local = load_settings()
        registry_url = registry_url or local.registry_database_url
        warehouse_url = warehouse_url or local.warehouse_database_url
    wanted = {"ST_PIPELINE_REGISTRY_URL": registry_url, "ST_PIPELINE_WAREHOUSE_URL": warehouse_url}
    saved = {name: os.environ.get(name) for name in wanted}
    try:
        for name, value in wanted.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_registry(registry_url: str | None = None) -> TenantRegistry:
    """The registry at ``registry_url`` (default: the environment's), with the environment's keys."""
    with deployment(registry_url=registry_url):
        return TenantRegistry.open(load_settings())


def register_tenants(registry_url: str | None, *tenants: SimulatedTenant) -> None:
    registry = open_registry(registry_url)
    for t in tenants:
        registry.add(t.tenant_id, f"tenant {t.tenant_id}", t.client_id, SecretStr(t.client_secret), change=TEST_CHANGE)
    registry.close()


def materialize_tenant(
    instance: dg.DagsterInstance,
    tenant_id: int,
    registry_url: str | None = None,
    warehouse_url: str | None = None,
    *,
    config: dict | None = None,
    raise_on_error: bool = True,
    datasets: list[str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Upgrade the warehouse schema, add the partition, run the tenant sync (of ``datasets``, or all).

    ``registry_url`` and ``warehouse_url`` (default: the environment's) are set as the deployment's
    variables for the run; ``config`` is the tenant sync's config.
    """
    config = {**(config or {}), **({"datasets": datasets} if datasets else {})}
    with deployment(registry_url, warehouse_url):
        engine = sa.create_engine(load_settings().warehouse_database_url)
        upgrade(engine)
        engine.dispose()
        add_tenant_partition(instance, tenant_id)
        return dg.materialize(
            [tenant_sync],
            selection=[TENANT_SYNC_KEY],  # as the scheduled run selects it: the whole tenant
            partition_key=str(tenant_id),
            instance=instance,
            resources={
                "servicetitan": ServiceTitanResource(),
                "tenant_registry": TenantRegistryResource(),
                "warehouse": WarehouseResource(),
            },
            run_config={"ops": {TENANT_SYNC_OP: {"config": config}}},
            raise_on_error=raise_on_error,
        )


def run_events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    """The events of type ``kind`` a run logged, in order."""
    return [entry.get_dagster_event() for entry in instance.all_logs(run_id, of_type=kind)]


def materializations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetMaterialization]:
    """The asset materializations a run reported, in order."""
    return [e.materialization for e in run_events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)]


def observations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetObservation]:
    """The asset observations a run reported, in order."""
    observed = run_events(instance, run_id, dg.DagsterEventType.ASSET_OBSERVATION)
    return [e.asset_observation_data.asset_observation for e in observed]


def raw_materializations(
    instance: dg.DagsterInstance, run_id: str
) -> dict[dg.AssetKey, Mapping[str, dg.MetadataValue]]:
    """The raw assets a tenant sync reported as materialized in a run, with their metadata."""
    return {m.asset_key: m.metadata for m in materializations(instance, run_id) if m.asset_key != TENANT_SYNC_KEY}


def tenant_sync_metadata(instance: dg.DagsterInstance, run_id: str) -> Mapping[str, dg.MetadataValue]:
    """The metadata of the tenant sync's own materialization in a run."""
    [own] = [m for m in materializations(instance, run_id) if m.asset_key == TENANT_SYNC_KEY]
    return own.metadata


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    """The check results a run reported."""
    return [
        e.asset_check_evaluation_data for e in run_events(instance, run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ]


def metadata_value(metadata: Mapping[str, dg.MetadataValue], key: str, kind: type[T]) -> T:
    """The value of ``metadata[key]``, which must be a ``kind``: to compare it other than by ``==`` (Dagster
    types a metadata value as any of its kinds; which one it is, is known only at run time)."""
    value = metadata[key].value
    assert isinstance(value, kind), f"{key}: {value!r} is not a {kind.__name__}"
    return value


def step_failure_error(event: dg.DagsterEvent) -> SerializableErrorInfo:
    """The error of a step failure event (a step failure always carries one)."""
    error = event.step_failure_data.error
    assert error is not None, f"step failure without an error: {event}"
    return error


def stored_run(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    """The run ``run_id`` as the instance stores it now; it must exist."""
    run = instance.get_run_by_id(run_id)
    assert run is not None, f"no run {run_id} in the instance"
    return run


def expected_content_key(record: dict, occurrence: int = 0) -> int:
    """The key of a record without an id, by the documented rule (computed here, not by the loader):
    blake2b (8 bytes) of the canonical JSON plus ``#occurrence``, big-endian, shifted right by 1."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":")) + f"#{occurrence}"
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def expected_keys(dataset_key: str, records: list[dict]) -> dict[int, dict]:
    """The raw-table key each record must be stored under: its integer ``id`` when the records carry
    one, else its content key (identical records numbered by occurrence, in listing order)."""
    with_id = [isinstance(r.get("id"), int) and not isinstance(r.get("id"), bool) for r in records]
    assert all(with_id) or not any(with_id), f"{dataset_key}: some records carry an id, others not"
    if all(with_id):
        return {record["id"]: record for record in records}
    seen: Counter[str] = Counter()
    keyed = {}
    for record in records:
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
        keyed[expected_content_key(record, seen[canonical])] = record
        seen[canonical] += 1
    return keyed


def assert_warehouse_equals_ground_truth(
    warehouse_url: str, sim: Simulator, tenant_id: int, datasets: list[Dataset] | None = None
) -> int:
    """Every row's key, modified_on, active and payload equal the simulator's records; returns rows.

    ``datasets`` defaults to every extracted dataset. The expected keys are worked out here from the
    records themselves (``expected_keys``), not by the loader's functions under test.
    """
    catalogue = load_catalogue()
    engine = sa.create_engine(warehouse_url)
    total = 0
    with engine.connect() as conn:
        for dataset in datasets or catalogue.extracted_datasets():
            table = raw_table(dataset)
            rows = {r.id: r for r in conn.execute(sa.select(table).where(table.c.tenant_id == tenant_id))}
            truth = expected_keys(dataset.key, sim.ground_truth(tenant_id, dataset.key))
            assert truth, f"simulator has no {dataset.key} for tenant {tenant_id}"
            assert sorted(rows) == sorted(truth), dataset.key
            for key, record in truth.items():
                row = rows[key]
                assert row.payload == record, (dataset.key, key)
                assert row.modified_on == parse_timestamp(record.get("modifiedOn"))
                assert row.active == record.get("active")
            total += len(rows)
    engine.dispose()
    return total


def prepared_warehouse(url: str, datasets: list[Dataset]) -> sa.Engine:
    """A warehouse engine at the current schema revision, with the raw tables of ``datasets``."""
    from st_pipeline.warehouse.engine import create_warehouse_engine
    from st_pipeline.warehouse.schema import ensure_raw_tables

    engine = create_warehouse_engine(url)
    upgrade(engine)
    ensure_raw_tables(engine, datasets)
    return engine


def sync_and_build(simulator: Simulator, engine: sa.Engine, *tenants: SimulatedTenant) -> None:
    """Sync each tenant's hub sources from ``simulator`` into ``engine``, then build its hub tables and marts."""
    from st_pipeline.servicetitan.auth import TenantCredentials
    from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
    from st_pipeline.servicetitan.settings import ApiSettings
    from st_pipeline.sync.extract import sync_tenant
    from st_pipeline.transform.build import build_tenant
    from st_pipeline.transform.hubs import source_datasets

    datasets = [load_catalogue().dataset(key) for key in source_datasets()]
    api = ApiSettings(api_url=simulator.url, auth_url=simulator.auth_url, app_key=SecretStr(simulator.config.app_key))
    for tenant in tenants:
        credentials = TenantCredentials(tenant.tenant_id, tenant.client_id, SecretStr(tenant.client_secret))
        with ServiceTitanClient(api, credentials, options=ClientOptions(requests_per_second=1000)) as client:
            results = list(sync_tenant(client, engine, datasets, run_id=f"sync-{tenant.tenant_id}"))
        assert all(r.succeeded for r in results), [str(r.error) for r in results if not r.succeeded]
        build_tenant(engine, tenant.tenant_id, f"build-{tenant.tenant_id}")


class TrapListener:
    """A TCP listener on 127.0.0.1 that records every connection and what it was sent.

    Stands for "somewhere else" a secret or data must never be sent: tests point hostile
    configuration at it and assert it heard nothing.
    """

    def __init__(self) -> None:
        import socket
        import threading

        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="trap-listener", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _serve(self) -> None:

        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                try:
                    self.received.append(conn.recv(65536) or b"<connected>")
                except OSError:
                    self.received.append(b"<connected>")

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        self._thread.join(timeout=5)
