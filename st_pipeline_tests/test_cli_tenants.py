"""A tenant's life through the command line: add, test, disable and enable, remove (data kept),
remove with --purge-data; the audit trail; owner-only files; its time zone; its declared reports."""

from __future__ import annotations

import getpass
import json
import os
import stat
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from pydantic import SecretStr

from st_pipeline.cli import main
from st_pipeline.defs.partitions import TENANT_PARTITIONS_NAME
from st_pipeline.defs.resources import TenantRegistryResource
from st_pipeline.defs.schedules import build_sync_schedule
from st_pipeline.demo import prepare_local_environment
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.warehouse.tables import raw_table, sync_log_table
from st_pipeline_tests.conftest import TENANT_A, point_at_simulator
from st_pipeline_tests.support import TEST_CHANGE, materialize_tenant, open_registry

ONE = SimulatedTenant(tenant_id=6601, client_id="cid.life-one", client_secret="cs1.life-one-secret")
TWO = SimulatedTenant(tenant_id=6602, client_id="cid.life-two", client_secret="cs1.life-two-secret")
CUSTOMERS = load_catalogue().dataset("crm/customers")
PAYROLL_SCOPE = "tn.prl.grosspayitems:r"


@pytest.fixture()
def deployment(local_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """A simulator of its own (scopes are denied in it), a home that does not exist yet, a Dagster home."""
    monkeypatch.setenv("ST_PIPELINE_HOME", str(tmp_path / "fresh" / "home"))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    config = SimulatorConfig(tenants=[ONE, TWO], seed=4, scale=0.02)
    with Simulator(config) as sim:
        point_at_simulator(monkeypatch, sim)
        yield sim


def _st(*args: str, stdin: str = "") -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin, prog_name="st-pipeline")
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def _partitions() -> Sequence[str]:
    with dg.DagsterInstance.get() as instance:
        return instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME)


def _rows(warehouse: Path, tenant_id: int) -> dict[str, int]:
    engine = sa.create_engine(f"sqlite:///{warehouse}")
    with engine.connect() as conn:
        counts = {
            table.name: conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
            ).scalar_one()
            for table in (raw_table(CUSTOMERS), sync_log_table)
        }
    engine.dispose()
    return counts


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_tenants_life_from_the_command_line(deployment: Simulator, tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    for tenant in (ONE, TWO):
        added = _st(
            "tenant",
            "add",
            "--tenant",
            str(tenant.tenant_id),
            "--name",
            f"Life {tenant.tenant_id}",
            "--client-id",
            tenant.client_id,
            stdin=tenant.client_secret + "\n",
        )
        assert f"Dagster partition {tenant.tenant_id} added" in added.stdout
    assert _partitions() == [str(ONE.tenant_id), str(TWO.tenant_id)]
    _st("db", "upgrade")
    # State created by the project is owner-only, the directories it made included.
    assert _mode(home) == _mode(home.parent) == 0o700
    for name in ("registry.db", "warehouse.db"):
        assert _mode(home / name) == 0o600, name
    for journal in home.glob("*.db-*"):
        assert _mode(journal) == 0o600, journal.name

    # `tenant test`: token, tenant id, and the scope that is not granted.
    deployment.deny_scopes(ONE.tenant_id, {PAYROLL_SCOPE})
    tested = _st("tenant", "test", "--tenant", str(ONE.tenant_id)).stdout
    assert f"tenant {ONE.tenant_id}: token issued; tenant id confirmed" in tested
    [denied] = [line for line in tested.splitlines() if "not granted" in line]
    assert PAYROLL_SCOPE in denied and "payroll/gross-pay-items" in denied
    assert "every probed scope is granted" in _st("tenant", "test", "--tenant", str(TWO.tenant_id)).stdout

    with dg.DagsterInstance.get() as instance:
        for tenant in (ONE, TWO):
            assert materialize_tenant(instance, tenant.tenant_id, datasets=[CUSTOMERS.key]).success
    warehouse = home / "warehouse.db"
    synced = _rows(warehouse, ONE.tenant_id)
    # The sync log of the latest run: run id and totals, then what changed.
    logged = _st("sync-log", "--tenant", str(ONE.tenant_id)).stdout
    assert logged.startswith("run ") and "1 datasets: 1 succeeded" in logged and "crm/customers" in logged
    assert f"{synced[raw_table(CUSTOMERS).name]} records, {synced[raw_table(CUSTOMERS).name]} rows written" in logged
    assert synced[raw_table(CUSTOMERS).name] == len(deployment.ground_truth(ONE.tenant_id, CUSTOMERS.key))

    # Disabled: the schedule skips it; its data and partition stay. Enabled again: back in the schedule.
    _st("tenant", "disable", "--tenant", str(ONE.tenant_id), "--reason", "contract paused")
    [listed] = [line for line in _st("tenant", "list").stdout.splitlines() if str(ONE.tenant_id) in line]
    assert listed.split()[1] == "disabled"
    assert _scheduled() == [str(TWO.tenant_id)]
    _st("tenant", "enable", "--tenant", str(ONE.tenant_id))
    assert _scheduled() == [str(ONE.tenant_id), str(TWO.tenant_id)]

    # Removed: credentials and partition go, the data stays.
    removed = _st("tenant", "remove", "--tenant", str(ONE.tenant_id)).stdout
    assert "its warehouse data stays" in removed and f"Dagster partition {ONE.tenant_id} removed" in removed
    assert _partitions() == [str(TWO.tenant_id)]
    assert str(ONE.tenant_id) not in _st("tenant", "list").stdout
    assert _rows(warehouse, ONE.tenant_id) == synced

    # Removed with --purge-data --yes: its rows go too, the other tenant's stay.
    other = _rows(warehouse, TWO.tenant_id)
    purged = _st("tenant", "remove", "--tenant", str(TWO.tenant_id), "--purge-data", "--yes").stdout
    assert "warehouse rows deleted" in purged
    assert _rows(warehouse, TWO.tenant_id) == {name: 0 for name in other}
    assert _rows(warehouse, ONE.tenant_id) == synced

    history = list(reversed(_st("tenant", "history", "--tenant", str(ONE.tenant_id)).stdout.splitlines()[1:]))
    expected = ["tenant add", "tenant disable", "tenant enable", "tenant remove"]
    assert len(history) == len(expected)
    assert all(command in line for command, line in zip(expected, history, strict=True))
    assert all(getpass.getuser() in line for line in history)
    assert "contract paused" in "\n".join(history)
    everything = _st("tenant", "history").stdout
    assert "tenant remove --purge-data" in everything and ONE.client_secret not in everything


def _scheduled() -> list[str | None]:
    schedule = build_sync_schedule("0 * * * *")
    with (
        dg.DagsterInstance.get() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 12, 1, 10, tzinfo=UTC),
            resources={"tenant_registry": TenantRegistryResource()},
        ) as context,
    ):
        evaluation = schedule(context)
        assert isinstance(evaluation, Iterator), evaluation  # the schedule is a generator
        return [r.partition_key for r in evaluation if isinstance(r, dg.RunRequest)]


def test_the_demo_creates_its_state_owner_only(
    tmp_path: Path, local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "demo" / "state"
    monkeypatch.setenv("ST_PIPELINE_HOME", str(home))
    monkeypatch.delenv("ST_PIPELINE_SECRET_KEYS")
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the demo exports its variables: keep them here
    env = prepare_local_environment()
    key_file = Path(env["ST_PIPELINE_SECRET_KEYS_FILE"])
    dagster_home = Path(env["DAGSTER_HOME"])
    assert _mode(home) == _mode(dagster_home) == 0o700
    assert _mode(key_file) == _mode(dagster_home / "dagster.yaml") == 0o600
    first_key = key_file.read_text()
    prepare_local_environment()  # a second demo keeps the key (the registry was encrypted with it)
    assert key_file.read_text() == first_key
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:  # monitored and queued like production
        assert instance.run_monitoring_enabled
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, dg.QueuedRunCoordinator), coordinator
        limits = coordinator.get_run_queue_config().tag_concurrency_limits
        assert limits[0]["key"] == "dagster/partition" and limits[0]["limit"] == 1


def _refused(*args: str, stdin: str = "") -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin, prog_name="st-pipeline")
    assert result.exit_code != 0, (args, result.stdout)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result


def _show_row(tenant_id: int, label: str) -> str:
    """The value of one row of `tenant show`."""
    shown = _st("tenant", "show", "--tenant", str(tenant_id)).stdout.splitlines()
    [row] = [line for line in shown if line[2:17] == f"{label:15}"]
    return row[18:]


def _list_row(tenant_id: int) -> list[str]:
    header, *rows = _st("tenant", "list").stdout.splitlines()
    assert header.split() == ["tenant", "id", "state", "client", "id", "time", "zone", "name"]
    [row] = [line.split() for line in rows if line.split()[0] == str(tenant_id)]
    return row


def test_tenant_add_takes_a_time_zone_and_refuses_a_bad_one(api_env: Simulator) -> None:
    add = ["tenant", "add", "--tenant", str(TENANT_A.tenant_id), "--name", "Zoned", "--client-id", TENANT_A.client_id]
    refused = _refused(*add, "--time-zone", "PST", stdin=TENANT_A.client_secret + "\n")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: time zone must be an IANA time zone name such as America/Los_Angeles, Europe/Berlin or UTC, "
        "got 'PST'; `st-pipeline tenant time-zones [TEXT]` lists them\n"
    )
    assert _st("tenant", "list").stdout.startswith("no tenants registered")
    assert _st("tenant", "history").stdout == "no changes recorded\n"

    added = _st(*add, "--time-zone", "America/Los_Angeles", stdin=TENANT_A.client_secret + "\n")
    assert "time zone America/Los_Angeles: its marts count days in it." in added.stdout
    assert _show_row(TENANT_A.tenant_id, "time zone") == "America/Los_Angeles"
    assert _list_row(TENANT_A.tenant_id) == [
        str(TENANT_A.tenant_id),
        "enabled",
        TENANT_A.client_id,
        "America/Los_Angeles",
        "Zoned",
    ]


def test_tenant_add_without_a_time_zone_says_days_are_utc(api_env: Simulator) -> None:
    added = _st(
        "tenant",
        "add",
        "--tenant",
        str(TENANT_A.tenant_id),
        "--name",
        "Unzoned",
        "--client-id",
        TENANT_A.client_id,
        stdin=TENANT_A.client_secret + "\n",
    )
    assert (
        "note: no time zone given, so its days are UTC; set its own with `st-pipeline tenant set-time-zone "
        f"--tenant {TENANT_A.tenant_id} ZONE` (an IANA name such as America/Los_Angeles)." in added.stderr
    )
    assert _list_row(TENANT_A.tenant_id)[3:6] == ["not", "set", "(UTC)"]


def test_set_time_zone_changes_unsets_and_refuses_from_the_command_line(local_env: Path) -> None:
    registry = open_registry()
    registry.add(6601, "Acme Heating", "cid.acme", SecretStr("cs1.acme"), change=TEST_CHANGE)
    registry.close()
    missing = (
        "not set — days are UTC; set it with `st-pipeline tenant set-time-zone --tenant 6601 ZONE` "
        "(an IANA name such as America/Los_Angeles)"
    )
    assert _show_row(6601, "time zone") == missing

    first = _st("tenant", "set-time-zone", "--tenant", "6601", "America/Los_Angeles").stdout
    assert first == (
        "tenant 6601 (Acme Heating): time zone America/Los_Angeles (was not set). Its next model build rebuilds "
        "its marts in the new zone; hub timestamps stay UTC.\n"
    )
    moved = _st("tenant", "set-time-zone", "--tenant", "6601", "Europe/Berlin").stdout
    assert moved.startswith("tenant 6601 (Acme Heating): time zone Europe/Berlin (was America/Los_Angeles). ")
    assert _show_row(6601, "time zone") == "Europe/Berlin"
    assert _list_row(6601)[3] == "Europe/Berlin"
    same = _st("tenant", "set-time-zone", "--tenant", "6601", "Europe/Berlin").stdout
    assert same == "tenant 6601 (Acme Heating): time zone already Europe/Berlin; nothing changed.\n"

    # Refused: a clear error, a non-zero exit, and the registry as it was.
    history = _st("tenant", "history", "--tenant", "6601").stdout
    for bad, shown in (("localtime", "'localtime'"), ("../etc", "'../etc'"), ("", "an empty value")):
        refused = _refused("tenant", "set-time-zone", "--tenant", "6601", bad)
        assert refused.exit_code == 1
        assert refused.stderr.startswith(
            "error: time zone must be an IANA time zone name such as America/Los_Angeles, Europe/Berlin or UTC, "
            f"got {shown}; "
        )
    assert _refused("tenant", "set-time-zone", "--tenant", "6601").exit_code == 2  # neither ZONE nor --unset
    assert _refused("tenant", "set-time-zone", "--tenant", "6601", "UTC", "--unset").exit_code == 2
    unknown = _refused("tenant", "set-time-zone", "--tenant", "6602", "UTC")
    assert "tenant 6602 is not registered" in unknown.stderr
    assert _show_row(6601, "time zone") == "Europe/Berlin"
    assert _st("tenant", "history", "--tenant", "6601").stdout == history

    unset = _st("tenant", "set-time-zone", "--tenant", "6601", "--unset").stdout
    assert unset == (
        "tenant 6601 (Acme Heating): time zone unset (was Europe/Berlin); its days are UTC. Its next model build "
        "rebuilds its marts in UTC.\n"
    )
    assert _show_row(6601, "time zone") == missing
    assert _list_row(6601)[3:6] == ["not", "set", "(UTC)"]

    registry = open_registry()
    entries = list(reversed(registry.history(6601)))
    registry.close()
    assert [(e.command, e.actor, e.detail) for e in entries[1:]] == [
        ("tenant set-time-zone", getpass.getuser(), "time zone America/Los_Angeles (was not set)"),
        ("tenant set-time-zone", getpass.getuser(), "time zone Europe/Berlin (was America/Los_Angeles)"),
        ("tenant set-time-zone", getpass.getuser(), "time zone unset, days are UTC (was Europe/Berlin)"),
    ]


def test_time_zones_lists_the_names_set_time_zone_accepts(local_env: Path) -> None:
    assert _st("tenant", "time-zones", "los_ang").stdout == "America/Los_Angeles\n"
    everything = _st("tenant", "time-zones").stdout.splitlines()
    assert {"America/Los_Angeles", "Europe/Berlin", "UTC"} <= set(everything) and "localtime" not in everything
    assert everything == sorted(everything)
    assert "no IANA time zone name contains 'Springfield'" in _refused("tenant", "time-zones", "Springfield").stderr


# -- declared reports ------------------------------------------------------------------------------


def _two_tenants() -> None:
    registry = open_registry()
    registry.add(6601, "Acme Heating", "cid.acme", SecretStr("cs1.acme"), change=TEST_CHANGE)
    registry.add(6602, "Bolt Plumbing", "cid.bolt", SecretStr("cs1.bolt"), change=TEST_CHANGE)
    registry.close()


def test_reports_are_declared_listed_disabled_and_removed_from_the_command_line(local_env: Path) -> None:
    _two_tenants()
    assert (
        _st("report", "list").stdout
        == "no reports declared for any tenant; declare one with `st-pipeline report add`\n"
    )
    assert _show_row(6601, "reports") == "none declared; declare one with `st-pipeline report add --tenant 6601 …`"

    added = _st(
        "report", "add", "--tenant", "6601", "--name", "technician_revenue", "--category", "business-unit-dashboard",
        "--report", "123", "--param", "BusinessUnitIds=1,2", "--param", "Status=done", "--window-days", "3",
    )  # fmt: skip
    assert added.stdout == (
        "tenant 6601: report technician_revenue declared (category business-unit-dashboard, report 123, "
        "BusinessUnitIds=1,2, Status=done, window 3 days); its runs extract it into raw_report_technician_revenue. "
        "Its asset is servicetitan/reports/technician_revenue: reload the code location (Deployment → Reload in the "
        "UI, or restart it) if the name is new.\n"
    )
    _st("report", "add", "--tenant", "6602", "--name", "calls", "--category", "marketing", "--report", "7")
    _st("report", "add", "--tenant", "6601", "--name", "calls", "--category", "marketing", "--report", "8")

    header, *rows = _st("report", "list").stdout.splitlines()
    assert header.split() == ["tenant", "id", "name", "state", "category", "report", "window", "parameters"]
    assert [row.split() for row in rows] == [
        ["6601", "calls", "enabled", "marketing", "8", "1d", "-"],
        [
            "6601",
            "technician_revenue",
            "enabled",
            "business-unit-dashboard",
            "123",
            "3d",
            "BusinessUnitIds=1,2",
            "Status=done",
        ],
        ["6602", "calls", "enabled", "marketing", "7", "1d", "-"],
    ]
    assert [row.split()[1] for row in _st("report", "list", "--tenant", "6602").stdout.splitlines()[1:]] == ["calls"]
    listed = json.loads(_st("report", "list", "--tenant", "6601", "--json").stdout)
    assert [{k: v for k, v in item.items() if k != "created_at"} for item in listed] == [
        {
            "tenant_id": 6601,
            "name": "calls",
            "category": "marketing",
            "report_id": 8,
            "parameters": {},
            "window_days": 1,
            "enabled": True,
        },
        {
            "tenant_id": 6601,
            "name": "technician_revenue",
            "category": "business-unit-dashboard",
            "report_id": 123,
            "parameters": {"BusinessUnitIds": "1,2", "Status": "done"},
            "window_days": 3,
            "enabled": True,
        },
    ]
    assert all(datetime.fromisoformat(item["created_at"]).tzinfo is not None for item in listed)

    disabled = _st("report", "disable", "--tenant", "6601", "--name", "calls").stdout
    assert disabled == (
        "tenant 6601: report calls disabled: runs skip it; `st-pipeline report enable --tenant 6601 --name calls` "
        "resumes it.\n"
    )
    assert _st("report", "disable", "--tenant", "6601", "--name", "calls").stdout == (
        "tenant 6601: report calls already disabled; nothing changed.\n"
    )
    assert _show_row(6601, "reports") == (
        "calls (category marketing, report 8, no parameters, window 1 day, disabled); technician_revenue "
        "(category business-unit-dashboard, report 123, BusinessUnitIds=1,2, Status=done, window 3 days)"
    )
    assert json.loads(_st("report", "list", "--json").stdout)[0]["enabled"] is False
    assert _st("report", "enable", "--tenant", "6601", "--name", "calls").stdout == (
        "tenant 6601: report calls enabled; its next runs extract it.\n"
    )

    replaced = _st(
        "report", "add", "--tenant", "6601", "--name", "calls", "--category", "marketing", "--report", "9", "--replace"
    )  # fmt: skip
    assert replaced.stdout.startswith("tenant 6601: report calls replaced (category marketing, report 9, ")
    removed = _st("report", "remove", "--tenant", "6601", "--name", "calls").stdout
    assert removed == (
        "tenant 6601: report calls removed (was category marketing, report 9, no parameters, window 1 day); "
        "rows already extracted stay in the warehouse.\n"
    )
    assert [row.split()[:2] for row in _st("report", "list").stdout.splitlines()[1:]] == [
        ["6601", "technician_revenue"],
        ["6602", "calls"],
    ]

    registry = open_registry()
    entries = [(e.command, e.actor, e.detail.split(":")[0]) for e in reversed(registry.history(6601))][1:]
    registry.close()
    me = getpass.getuser()
    assert entries == [
        ("report add", me, "declared report technician_revenue"),
        ("report add", me, "declared report calls"),
        ("report disable", me, "report calls disabled"),
        ("report enable", me, "report calls enabled"),
        ("report add --replace", me, "replaced report calls"),
        ("report remove", me, "removed report calls (was category marketing, report 9, no parameters, window 1 day)"),
    ]

    # A removed tenant's reports go with it.
    _st("tenant", "remove", "--tenant", "6601")
    assert [row.split()[:2] for row in _st("report", "list").stdout.splitlines()[1:]] == [["6602", "calls"]]


def test_report_commands_refuse_bad_input_with_what_to_do_and_change_nothing(local_env: Path) -> None:
    _two_tenants()
    _st("report", "add", "--tenant", "6601", "--name", "revenue", "--category", "accounting", "--report", "11")
    before = (_st("report", "list", "--json").stdout, _st("tenant", "history").stdout)
    add = ["report", "add", "--tenant", "6601", "--category", "accounting", "--report", "11"]
    for args, exit_code, message in [
        (
            [*add, "--name", "Tech-Revenue"],
            1,
            "error: report name must be a lowercase letter followed by lowercase letters, digits or underscores, 40 "
            "characters at most (like technician_revenue): it becomes part of the table name raw_report_<name>; "
            "got 'Tech-Revenue'; nothing was stored\n",
        ),
        (
            [*add, "--name", "units", "--param", "From=2026-01-01"],
            1,
            "error: report parameter 'From' is reserved: From and To come from the period of each run (on a "
            "scheduled run, its last window days: --window-days), so they are never declared; drop it; nothing was "
            "stored\n",
        ),
        (
            [*add, "--name", "units", "--param", "BusinessUnitIds"],
            2,
            "error: --param takes NAME=VALUE (like BusinessUnitIds=1,2), got 'BusinessUnitIds' (see "
            "`st-pipeline report add --help`)\n",
        ),
        (
            [*add, "--name", "units", "--param", "Ids=1", "--param", "Ids=2"],
            2,
            "error: --param Ids is given twice; give each once (see `st-pipeline report add --help`)\n",
        ),
        (
            [*add, "--name", "units", "--window-days", "91"],
            1,
            "error: window days must be a whole number from 1 to 90 (how many trailing days each scheduled run "
            "re-reads); got 91; nothing was stored\n",
        ),
        (
            ["report", "add", "--tenant", "6601", "--name", "units", "--category", "accounting", "--report", "0"],
            1,
            "error: report id must be a whole number between 1 and 9223372036854775807 (ServiceTitan's id of the "
            "report); got 0; nothing was stored\n",
        ),
        (
            [*add, "--name", "revenue"],
            1,
            "error: tenant 6601 already declares a report named revenue (category accounting, report 11, no "
            "parameters, window 1 day); replace it with `st-pipeline report add … --replace`, or pick another "
            "name; nothing was stored\n",
        ),
        (
            ["report", "add", "--tenant", "6699", "--name", "units", "--category", "accounting", "--report", "11"],
            1,
            "error: tenant 6699 is not registered; add it with `st-pipeline tenant add` (`st-pipeline tenant list` "
            "shows the registered ones)\n",
        ),
        (
            ["report", "list", "--tenant", "6699"],
            1,
            "error: tenant 6699 is not registered; add it with `st-pipeline tenant add` (`st-pipeline tenant list` "
            "shows the registered ones)\n",
        ),
        (
            ["report", "disable", "--tenant", "6601", "--name", "calls"],
            1,
            "error: tenant 6601 has no report named 'calls'; its reports are revenue (`st-pipeline report list "
            "--tenant 6601`); nothing was changed\n",
        ),
        (
            ["report", "remove", "--tenant", "6602", "--name", "revenue"],
            1,
            "error: tenant 6602 has no report named 'revenue'; it declares none; declare one with `st-pipeline "
            "report add` (`st-pipeline report list --tenant 6602`); nothing was removed\n",
        ),
    ]:
        refused = _refused(*args)
        assert (refused.exit_code, refused.stderr) == (exit_code, message), args
    assert (_st("report", "list", "--json").stdout, _st("tenant", "history").stdout) == before
