"""Canary secrets through a tenant's whole life, as an operator drives it from the command line.

Two tenants are onboarded, synced, one's credentials are revoked (a failed run, an alert, a failed
``tenant test``), renewed, the encryption key is rotated and the old key dropped, and a sync runs
on the new key alone. Then every place a secret could end up is searched for every client secret,
every access token the simulator issued, both encryption keys and the app key: the commands'
output, Dagster's storage (SQLite files, or PostgreSQL tables) with its run config, tags, metadata
and errors, the alert bodies, and the raw bytes of the warehouse and registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from st_pipeline.defs.alerting import AlertingResource, run_failure_alert_sensor
from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY
from st_pipeline.defs.resources import TenantRegistryResource
from st_pipeline.defs.schedules import TENANT_SYNC_OP
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.tenants.crypto import generate_key
from st_pipeline_tests.alerts.conftest import HttpReceiver
from st_pipeline_tests.support import REPO_ROOT, run_events

BIN = Path(sys.executable).parent
APP_KEY = "ak1.CANARY-app-key-5e7d21"
FIRST = SimulatedTenant(tenant_id=8801, client_id="cid.canary-one", client_secret="cs1.CANARY-one-4c1f9e2b")
SECOND = SimulatedTenant(tenant_id=8802, client_id="cid.canary-two", client_secret="cs1.CANARY-two-a83d07c6")
RENEWED_SECRET = "cs1.CANARY-two-renewed-77b0"
ONLY = json.dumps({"ops": {TENANT_SYNC_OP: {"config": {"datasets": ["crm/customers", "settings/business-units"]}}}})


class Operator:
    """Runs the commands a user types, keeping everything they printed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.outputs: list[str] = []

    def run(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None, keep: bool = True, expect: int = 0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args),
            input=stdin,
            env={**self.env, **(env or {})},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == expect, (args, done.stdout[-2000:], done.stderr[-3000:])
        if keep:
            self.outputs.append(done.stdout + done.stderr)
        return done

    def st(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None, keep: bool = True, expect: int = 0
    ) -> subprocess.CompletedProcess[str]:
        return self.run(str(BIN / "st-pipeline"), *args, stdin=stdin, env=env, keep=keep, expect=expect)

    def materialize(self, tenant_id: int, expect: int = 0, env: dict[str, str] | None = None) -> None:
        self.run(
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "st_pipeline.definitions",
            "--select",
            TENANT_SYNC_KEY.to_user_string(),
            "--partition",
            str(tenant_id),
            "--config-json",
            ONLY,
            expect=expect,
            env=env,
        )


def _postgres_instance(dagster_home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = sa.make_url(postgres_url)
    for name, value in (
        ("DAGSTER_PG_HOST", url.host or "127.0.0.1"),
        ("DAGSTER_PG_PORT", str(url.port or 5432)),
        ("DAGSTER_PG_USER", url.username or "postgres"),
        ("DAGSTER_PG_PASSWORD", url.password or ""),
        ("DAGSTER_PG_DB", url.database or ""),
    ):
        monkeypatch.setenv(name, value)
    (dagster_home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())


def _postgres_text(url: str) -> str:
    """Every row of every table of the database, as text."""
    engine = sa.create_engine(url)
    chunks: list[str] = []
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            chunks.extend(conn.execute(sa.text(f'SELECT t::text FROM "{table}" t')).scalars())
    engine.dispose()
    return "\n".join(chunks)


def _file_bytes(*roots: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes() for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_no_secret_leaks_anywhere_over_a_tenants_life(
    storage: str,
    local_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receiver: HttpReceiver,
    request: pytest.FixtureRequest,
) -> None:
    first_key, second_key = os.environ["ST_PIPELINE_SECRET_KEYS"], generate_key()
    config = SimulatorConfig(tenants=[FIRST, SECOND], seed=9, scale=0.02, app_key=APP_KEY)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    pg_url = request.getfixturevalue("fresh_postgres")() if storage == "postgresql" else None
    if pg_url:
        _postgres_instance(dagster_home, pg_url, monkeypatch)
    with Simulator(config) as sim:
        for name, value in (
            ("SERVICETITAN_ENVIRONMENT", "custom"),
            ("SERVICETITAN_API_URL", sim.url),
            ("SERVICETITAN_AUTH_URL", sim.auth_url),
            ("SERVICETITAN_APP_KEY", APP_KEY),
            ("DAGSTER_HOME", str(dagster_home)),
        ):
            monkeypatch.setenv(name, value)
        op = Operator(dict(os.environ))

        # Onboarding: one secret on standard input, one from a variable.
        op.st(
            "tenant",
            "add",
            "--tenant",
            str(FIRST.tenant_id),
            "--name",
            "Canary One",
            "--client-id",
            FIRST.client_id,
            stdin=FIRST.client_secret + "\n",
        )
        op.st(
            "tenant",
            "add",
            "--tenant",
            str(SECOND.tenant_id),
            "--name",
            "Canary Two",
            "--client-id",
            SECOND.client_id,
            "--client-secret-env",
            "TENANT_TWO_SECRET",
            env={"TENANT_TWO_SECRET": SECOND.client_secret},
        )
        op.st("db", "upgrade")
        op.materialize(FIRST.tenant_id)
        op.materialize(SECOND.tenant_id)

        # Failure: ServiceTitan revokes the second tenant; its run fails, the sensor alerts.
        sim.revoke_credentials(SECOND.tenant_id)
        op.materialize(SECOND.tenant_id, expect=1)
        op.st("tenant", "test", "--tenant", str(SECOND.tenant_id), expect=1)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            [failed] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            failure = run_events(instance, failed.run_id, dg.DagsterEventType.RUN_FAILURE)[0]
            with dg.build_run_status_sensor_context(
                sensor_name="run_failure_alert_sensor",
                dagster_event=failure,
                dagster_instance=instance,
                dagster_run=failed,
                resources={"tenant_registry": TenantRegistryResource(), "alerting": AlertingResource()},
            ).for_run_failure() as context:
                run_failure_alert_sensor(context)
        alerts = [r.body.decode() for r in receiver.drain()]
        assert len(alerts) == 2 and any("rejected client id" in a for a in alerts)

        # Renewal, then rotation to a new key and the old key dropped.
        sim.restore_credentials(SECOND.tenant_id)
        sim.set_client_secret(SECOND.tenant_id, RENEWED_SECRET)
        op.st("tenant", "update-credentials", "--tenant", str(SECOND.tenant_id), stdin=RENEWED_SECRET + "\n")
        generated = op.st("keys", "generate", keep=False)  # its output is a key, by design
        assert generated.stdout.strip() != second_key
        rotated = op.st("keys", "rotate", env={"ST_PIPELINE_SECRET_KEYS": f"{second_key},{first_key}"})
        assert "2 client secret(s) re-encrypted" in rotated.stdout
        new_only = {"ST_PIPELINE_SECRET_KEYS": second_key}
        op.materialize(FIRST.tenant_id, env=new_only)
        op.materialize(SECOND.tenant_id, env=new_only)
        old_only = op.st(
            "tenant", "test", "--tenant", str(FIRST.tenant_id), env={"ST_PIPELINE_SECRET_KEYS": first_key}, expect=1
        )
        assert "cannot be decrypted" in old_only.stderr and len(old_only.stderr.splitlines()) == 1
        for args in (
            ("tenant", "list"),
            ("tenant", "show", "--tenant", str(SECOND.tenant_id)),
            ("tenant", "history"),
            ("sync-log", "--tenant", str(FIRST.tenant_id)),
        ):
            op.st(*args, env=new_only)
        tokens = sim.issued_tokens()

    assert len(tokens) >= 6  # a token per run and per verification, at least
    canaries = {
        FIRST.client_secret,
        SECOND.client_secret,
        RENEWED_SECRET,
        APP_KEY,
        first_key,
        second_key,
        generated.stdout.strip(),
        *tokens,
    }
    places: dict[str, str] = {
        "command output": "\n".join(op.outputs),
        "alert bodies": "\n".join(alerts),
    }
    for path, content in _file_bytes(dagster_home, *local_env.iterdir()).items():
        places[path] = content.decode("utf-8", errors="replace")
    if pg_url:
        places["dagster's PostgreSQL storage"] = _postgres_text(pg_url)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 5
        places["run config and tags"] = json.dumps([(r.run_config, r.tags) for r in runs], default=str)
        places["event log"] = "\n".join(repr(e) for r in runs for e in instance.all_logs(r.run_id))
    assert "registry.db" in " ".join(places) and "warehouse.db" in " ".join(places)
    leaks = [(where, secret[:12] + "…") for where, text in places.items() for secret in canaries if secret in text]
    assert leaks == []
