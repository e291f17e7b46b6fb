"""Shared fixtures: a real simulator over HTTP, isolated local state, a real PostgreSQL database."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.settings import Settings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.crypto import generate_key
from st_pipeline_tests.alerts.conftest import HttpReceiver

# A secret that must never show up anywhere but the encrypted registry and the simulator.
CANARY_SECRET = "cs1.CANARY-7f3e9a1c-never-log-me"
TENANT_A = SimulatedTenant(tenant_id=4101, client_id="cid.tenant-a", client_secret=CANARY_SECRET)
TENANT_B = SimulatedTenant(
    tenant_id=4202, client_id="cid.tenant-b", client_secret="cs1.second-tenant-secret", scale=0.03
)

POSTGRES_ADMIN_URL = os.environ.get("ST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# Every variable of the deployment's configuration: a test starts with none of them set.
_ENV_VARS = tuple(Settings.variables())


@pytest.fixture(autouse=True)
def no_dagster_instance_outlives_its_test() -> Iterator[None]:
    """Fail the test that leaves a Dagster instance entered after it ends.

    Schedule and sensor contexts built with ``instance=`` open their own instance from its ref and
    close it only when the context is used as a ``with`` block. Left open, it is closed later by the
    garbage collector, which resets Dagster's current-instance context variable to a finished
    test's instance, whose directory is gone: another test then fails at random with "unable to
    open database file". Collecting here pins the leak on the test that caused it.
    """
    yield
    gc.collect()
    # An entered instance sets the current definitions-state storage; ``get`` is the public class's
    # view of it (the base class is private).
    assert dg.UPathDefsStateStorage.get() is None, "a Dagster instance or context was left open; use `with`"


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """Two tenants, every dataset, small volumes; shared by the whole session (read-only use)."""
    config = SimulatorConfig(tenants=[TENANT_A, TENANT_B], seed=7, scale=0.05, export_batch_size=20)
    with Simulator(config) as sim:
        yield sim


@pytest.fixture()
def fresh_simulator() -> Iterator[Simulator]:
    """A simulator of its own, for tests that expire tokens or move its clock."""
    config = SimulatorConfig(tenants=[TENANT_A], seed=3, scale=0.02, export_batch_size=25, datasets=CORE_DATASETS)
    with Simulator(config) as sim:
        yield sim


@pytest.fixture()
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated ST_PIPELINE_HOME with a fresh encryption key; returns the home directory."""
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "st_home"
    home.mkdir()
    monkeypatch.setenv("ST_PIPELINE_HOME", str(home))
    monkeypatch.setenv("ST_PIPELINE_SECRET_KEYS", generate_key())
    return home


@pytest.fixture()
def api_env(local_env: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """SERVICETITAN_* variables pointing at the shared simulator."""
    point_at_simulator(monkeypatch, simulator)
    return simulator


def point_at_simulator(monkeypatch: pytest.MonkeyPatch, simulator: Simulator) -> None:
    """The deployment's ServiceTitan variables for ``simulator`` (a custom location, opted into)."""
    monkeypatch.setenv("SERVICETITAN_ENVIRONMENT", "custom")
    monkeypatch.setenv("SERVICETITAN_API_URL", simulator.url)
    monkeypatch.setenv("SERVICETITAN_AUTH_URL", simulator.auth_url)
    monkeypatch.setenv("SERVICETITAN_APP_KEY", simulator.config.app_key)


@pytest.fixture()
def fresh_postgres() -> Iterator[Callable[[], str]]:
    """Makes new, empty PostgreSQL databases on demand (URL each); all dropped after the test."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def create() -> str:
        names.append(f"st_pipeline_test_{uuid.uuid4().hex[:12]}")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{names[-1]}"'))
        return admin.url.set(database=names[-1]).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database on 127.0.0.1:5432, dropped after the session."""
    name = f"st_pipeline_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def built_warehouse(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """The URL of a warehouse of a kind (``sqlite``, ``postgresql``) holding the shared simulator's two
    tenants, synced, with their hub tables and marts built; each made on first use and shared by the
    session (read-only use)."""
    from st_pipeline.transform.hubs import source_datasets
    from st_pipeline_tests.support import prepared_warehouse, sync_and_build

    urls: dict[str, str] = {}
    databases: list[str] = []
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")

    def url_of(kind: str) -> str:
        if kind not in urls:
            if kind == "sqlite":
                url = f"sqlite:///{tmp_path_factory.mktemp('built') / 'warehouse.db'}"
            else:
                databases.append(f"st_pipeline_test_{uuid.uuid4().hex[:12]}")
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{databases[-1]}"'))
                url = admin.url.set(database=databases[-1]).render_as_string(hide_password=False)
            engine = prepared_warehouse(url, [load_catalogue().dataset(key) for key in source_datasets()])
            try:
                sync_and_build(simulator, engine, TENANT_A, TENANT_B)
            finally:
                engine.dispose()
            urls[kind] = url
        return urls[kind]

    yield url_of
    with admin.connect() as conn:
        for name in databases:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture()
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    """A real local HTTP receiver, configured as the JSON-webhook alert channel."""
    server = HttpReceiver()
    server.start()
    monkeypatch.setenv("ST_PIPELINE_ALERT_WEBHOOK_URL", server.url("/hooks/alerts"))
    yield server
    server.stop()
