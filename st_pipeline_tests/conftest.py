"""Shared fixtures: a real simulator over HTTP, isolated local state, a real PostgreSQL database."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster._core.storage.defs_state.base import DefsStateStorage

from st_pipeline.servicetitan.catalogue import CORE_DATASETS
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.crypto import generate_key

# A secret that must never show up anywhere but the encrypted registry and the simulator.
CANARY_SECRET = "cs1.CANARY-7f3e9a1c-never-log-me"
TENANT_A = SimulatedTenant(tenant_id=4101, client_id="cid.tenant-a", client_secret=CANARY_SECRET)
TENANT_B = SimulatedTenant(tenant_id=4202, client_id="cid.tenant-b", client_secret="cs1.second-tenant-secret", scale=0.03)

POSTGRES_ADMIN_URL = os.environ.get("ST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

_ENV_VARS = (
    "ST_PIPELINE_HOME",
    "ST_PIPELINE_WAREHOUSE_URL",
    "ST_PIPELINE_REGISTRY_URL",
    "ST_PIPELINE_SECRET_KEYS",
    "ST_PIPELINE_SECRET_KEYS_FILE",
    "SERVICETITAN_ENVIRONMENT",
    "SERVICETITAN_API_URL",
    "SERVICETITAN_AUTH_URL",
    "SERVICETITAN_APP_KEY",
    "DAGSTER_HOME",
)


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
    assert DefsStateStorage.get() is None, "a Dagster instance or context was left open; use `with`"


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
    monkeypatch.setenv("SERVICETITAN_API_URL", simulator.url)
    monkeypatch.setenv("SERVICETITAN_AUTH_URL", simulator.auth_url)
    monkeypatch.setenv("SERVICETITAN_APP_KEY", simulator.config.app_key)
    return simulator


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
