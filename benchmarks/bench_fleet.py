"""Fleet benchmark: many tenants, production-style, one tick after another.

    python benchmarks/bench_fleet.py                 # make bench-fleet: 20 tenants
    python benchmarks/bench_fleet.py --tenants 5 --scale 0.05

What runs: the simulator in its own process (every dataset, ServiceTitan's 60 requests/s per
tenant); Dagster's production instance (``dagster.yaml`` of the repository: PostgreSQL storage, the
queued run coordinator with one run per tenant, run monitoring) on the local PostgreSQL; the
warehouse and the registry in PostgreSQL databases of their own; ``dagster-daemon`` with the code
location of ``workspace.yaml``, launching each run in a process of its own, as in production.

Ticks, each a Dagster backfill of every tenant partition of the ``servicetitan_sync`` job:
1. a full sync of all tenants (tag ``st_pipeline/full_refresh``);
2. an hourly tick after a 1% change of every dataset of every tenant;
3. an hourly tick with no change.

Measured per tick: wall time from submission to the last run's end; CPU seconds of all Dagster
processes (daemon, code servers and the run workers they start), per tenant-run; the run worker's
own CPU (process start and imports included, as each run's hub and mart build, its last step,
reports it in ``process_cpu_s``);
CPU seconds of the PostgreSQL server; events written. From the no-change
tick: how many tenants one core syncs per hour (client side, and with the PostgreSQL server).
Everything is torn down at the end (databases, processes, temporary files).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POSTGRES_ADMIN_URL = os.environ.get("ST_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
FIRST_TENANT = 7001
TICK_DEADLINE_S = 3600
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root_pid: int) -> float:
    """CPU of a process and its living descendants, and of every descendant they have reaped."""
    total, pending = 0.0, [root_pid]
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            children = " ".join(
                Path(f"/proc/{pid}/task/{task}/children").read_text() for task in os.listdir(f"/proc/{pid}/task")
            ).split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        total += (utime + stime + cutime + cstime) / CLOCK_TICKS
        pending.extend(int(child) for child in children)
    return total


def postmaster_pid() -> int:
    """The PostgreSQL server's main process (its backends are its children)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")[0]
                status = (entry / "status").read_text()
            except OSError:
                continue
            if command.endswith(b"postgres") and "\nPPid:\t1\n" in status:
                return int(entry.name)
    raise RuntimeError("no PostgreSQL server process found")


def start_simulator(tenants: list[int], scale: float) -> tuple[subprocess.Popen[str], str, dict[int, tuple[str, str]]]:
    args = [
        sys.executable,
        "-m",
        "st_pipeline.simulator",
        "--port",
        "0",
        "--seed",
        "21",
        "--scale",
        str(scale),
        "--datasets",
        "all",
        "--rate-limit",
        "60",
        *(arg for t in tenants for arg in ("--tenant", str(t))),
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url, credentials = "", {}
    assert process.stdout is not None
    for line in process.stdout:
        words = line.split()
        if words[0] == "READY":
            url = words[1]
        elif words[0] == "TENANT":
            credentials[int(words[1])] = (words[2], words[3])
            if len(credentials) == len(tenants):
                break
    return process, url, credentials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.1, help="simulator volume per tenant (1.0 ≈ 10k core records)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up databases and processes on a kill too
    tenants = [FIRST_TENANT + i for i in range(args.tenants)]
    suffix = uuid.uuid4().hex[:8]
    names = {role: f"st_bench_{role}_{suffix}" for role in ("dagster", "warehouse", "registry")}
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    base = sa.make_url(POSTGRES_ADMIN_URL)
    workdir = Path(tempfile.mkdtemp(prefix="st-bench-fleet-"))
    simulator = daemon = None
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        print(f"simulator: {args.tenants} tenants, every dataset, scale {args.scale} …", flush=True)
        simulator, api_url, credentials = start_simulator(tenants, args.scale)
        dagster_home = workdir / "dagster_home"
        dagster_home.mkdir()
        shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "DAGSTER_PG_HOST": base.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(base.port or 5432),
            "DAGSTER_PG_USER": base.username or "postgres",
            "DAGSTER_PG_PASSWORD": base.password or "",
            "DAGSTER_PG_DB": names["dagster"],
            "ST_PIPELINE_WAREHOUSE_URL": base.set(database=names["warehouse"]).render_as_string(hide_password=False),
            "ST_PIPELINE_REGISTRY_URL": base.set(database=names["registry"]).render_as_string(hide_password=False),
            "ST_PIPELINE_HOME": str(workdir / "home"),
            "SERVICETITAN_ENVIRONMENT": "custom",
            "SERVICETITAN_API_URL": api_url,
            "SERVICETITAN_AUTH_URL": api_url + "/connect/token",
            "SERVICETITAN_APP_KEY": "ak1.simulator",
            # The ticks are the benchmark's; no schedule of the code location fires during it.
            "ST_PIPELINE_SYNC_CRON": "0 0 1 1 *",
            "ST_PIPELINE_RECONCILE_CRON": "0 0 1 1 *",
            "ST_PIPELINE_FRESHNESS_CRON": "0 0 1 1 *",
            "ST_PIPELINE_MAINTENANCE_CRON": "0 0 1 1 *",
        }
        env["ST_PIPELINE_SECRET_KEYS"] = _run(env, "st-pipeline", "keys", "generate").strip()
        _run(env, "st-pipeline", "db", "upgrade")
        for tenant in tenants:
            client_id, secret = credentials[tenant]
            _run(
                env,
                "st-pipeline",
                "tenant",
                "add",
                "--tenant",
                str(tenant),
                "--name",
                f"Fleet {tenant}",
                "--client-id",
                client_id,
                stdin=secret + "\n",
            )
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        postmaster = postmaster_pid()
        dagster_db = sa.create_engine(env["ST_PIPELINE_WAREHOUSE_URL"].rsplit("/", 1)[0] + "/" + names["dagster"])
        results = []
        for label, tags, change in (
            ("full sync", {"st_pipeline/full_refresh": "true"}, None),
            ("hourly, 1% changed", {}, 0.01),
            ("hourly, nothing changed", {}, None),
        ):
            if change:
                for tenant in tenants:
                    request = urllib.request.Request(
                        f"{api_url}/_simulator/tenants/{tenant}/changes?fraction={change}", method="POST"
                    )
                    urllib.request.urlopen(request, timeout=60).read()  # loopback simulator
            results.append(_tick(label, tags, tenants, env, daemon.pid, postmaster, dagster_db))
            print(_line(results[-1]), flush=True)
        dagster_db.dispose()
        quiet = results[-1]
        per_core_client = 3600 / quiet["client_cpu_s_per_run"]
        per_core_all = 3600 / (quiet["client_cpu_s_per_run"] + quiet["postgres_cpu_s_per_run"])
        summary = {
            "tenants": args.tenants,
            "scale": args.scale,
            "ticks": results,
            "tenants_per_core_hour_client": round(per_core_client),
            "tenants_per_core_hour_with_postgres": round(per_core_all),
        }
        print(
            f"\none core syncs about {per_core_client:.0f} unchanged tenants an hour (Dagster processes), "
            f"{per_core_all:.0f} counting the PostgreSQL server too"
        )
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2))
        return 0
    finally:
        for process in (daemon, simulator):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(workdir, ignore_errors=True)


def _run(env: dict[str, str], command: str, *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [str(BIN / command), *args],
        env=env,
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command} {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _tick(
    label: str,
    tags: dict[str, str],
    tenants: list[int],
    env: dict[str, str],
    daemon_pid: int,
    postmaster: int,
    dagster_db: sa.Engine,
) -> dict[str, Any]:
    """One backfill of every tenant partition, measured until its last run ends."""
    with dagster_db.connect() as conn:
        events_before = conn.execute(sa.text("SELECT count(*) FROM event_logs")).scalar_one()
    client_before, postgres_before = cpu_seconds(daemon_pid), cpu_seconds(postmaster)
    started = time.monotonic()
    backfill_args = [
        "job",
        "backfill",
        "-w",
        str(REPO / "workspace.yaml"),
        "-j",
        "servicetitan_sync",
        "--partitions",
        ",".join(map(str, tenants)),
        "--noprompt",
    ]
    if tags:
        backfill_args += ["--tags", json.dumps(tags)]
    output = _run(env, "dagster", *backfill_args)
    found = re.search(r"Launched backfill job `(\w+)`", output)
    if found is None:
        raise RuntimeError(f"{label}: no backfill id in {output[-300:]!r}")
    backfill_id = found.group(1)
    import dagster as dg

    os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_")})
    with dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + TICK_DEADLINE_S
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            done = [
                r
                for r in runs
                if r.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
            ]
            if len(runs) == len(tenants) and len(done) == len(runs):
                break
            time.sleep(1)  # polling the daemon's progress, bounded by the deadline
        else:
            raise RuntimeError(f"{label}: the runs did not finish within {TICK_DEADLINE_S} s")
        failed = [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
        failures = []  # why each failed run failed: the first step failure's message
        for run_id in failed:
            for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
                error = entry.get_dagster_event().step_failure_data.error
                assert error is not None, f"run {run_id}: a step failure without its error"
                while error.cause is not None:  # the user code's own error, not Dagster's wrapper
                    error = error.cause
                failures.append(error.message.strip()[:300])
                break
            else:
                failures.append(f"run {run_id}: no step failed (run-level failure)")
        # Each run worker's own CPU, process start included, as its last step (the tenant's hub and
        # mart build, after the sync) reports it.
        worker_cpu: list[float] = []
        for run in runs:
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
                materialization = entry.asset_materialization
                assert materialization is not None  # the log was filtered to asset materializations
                if materialization.asset_key.path == ["servicetitan", "tenant_models"]:
                    cpu_s = materialization.metadata["process_cpu_s"].value
                    assert isinstance(cpu_s, int | float), cpu_s  # the asset reports round(process_cpu_s(), 2)
                    worker_cpu.append(cpu_s)
    wall = time.monotonic() - started
    client, postgres = cpu_seconds(daemon_pid) - client_before, cpu_seconds(postmaster) - postgres_before
    with dagster_db.connect() as conn:
        events = conn.execute(sa.text("SELECT count(*) FROM event_logs")).scalar_one() - events_before
    return {
        "tick": label,
        "runs": len(runs),
        "failed": len(failed),
        "wall_s": round(wall, 1),
        "client_cpu_s": round(client, 1),
        "client_cpu_s_per_run": round(client / len(runs), 2),
        "run_worker_cpu_s_median": round(sorted(worker_cpu)[len(worker_cpu) // 2], 2) if worker_cpu else None,
        "run_worker_cpu_s_max": round(max(worker_cpu), 2) if worker_cpu else None,
        "postgres_cpu_s": round(postgres, 1),
        "postgres_cpu_s_per_run": round(postgres / len(runs), 2),
        "events": events,
        "events_per_run": round(events / len(runs)),
        "failures": failures,
    }


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['tick']:24} {result['runs']} runs ({result['failed']} failed) in {result['wall_s']} s; "
        f"Dagster processes {result['client_cpu_s_per_run']} CPU-s per run (run worker: median "
        f"{result['run_worker_cpu_s_median']}, max {result['run_worker_cpu_s_max']}), PostgreSQL "
        f"{result['postgres_cpu_s_per_run']} CPU-s per run; {result['events_per_run']} events per run"
        + "".join(f"\n    failed: {message}" for message in result["failures"])
    )


if __name__ == "__main__":
    sys.exit(main())
