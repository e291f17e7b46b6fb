"""Reports declared per tenant in the registry, on SQLite and the real PostgreSQL: declared, replaced
only when asked, listed in order, disabled and enabled, removed, gone with their tenant, each change
in the audit trail; what a declaration may hold, refused before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.tenants.crypto import SecretBox, generate_key
from st_pipeline.tenants.registry import Change, TenantRegistry, UnknownTenantError
from st_pipeline.tenants.reports import (
    InvalidReportDeclaration,
    ReportDeclaration,
    ReportExistsError,
    UnknownReportError,
    validate_category,
    validate_parameters,
    validate_report_id,
    validate_report_name,
    validate_window_days,
)
from st_pipeline.tenants.tables import reports_table

CHANGE = Change("test", actor="tester")
ACME, BOLT = 4101, 4202
UNITS = {"BusinessUnitIds": "1,2"}


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TenantRegistry]:
    """An empty registry with two tenants, Acme and Bolt."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        create: Callable[[], str] = request.getfixturevalue("fresh_postgres")
        url = create()
    opened = TenantRegistry(sa.create_engine(url), SecretBox([generate_key()]))
    for tenant_id, name in ((ACME, "Acme"), (BOLT, "Bolt")):
        opened.add(tenant_id, name, f"cid.{name.lower()}", SecretStr("cs1.secret"), change=CHANGE)
    try:
        yield opened
    finally:
        opened.close()


def _details(registry: TenantRegistry, tenant_id: int) -> list[tuple[str, str]]:
    """The tenant's audit entries after its registration, oldest first: (command, detail)."""
    return [(e.command, e.detail) for e in reversed(registry.history(tenant_id))][1:]


def test_a_declaration_is_stored_and_read_back_as_declared(registry: TenantRegistry) -> None:
    before = datetime.now(UTC)
    declared = registry.declare_report(
        ACME,
        "technician_revenue",
        "business-unit-dashboard",
        123,
        {"Status": "done", "BusinessUnitIds": "1,2"},
        window_days=3,
        change=Change("report add", actor="alice"),
    )
    assert declared == ReportDeclaration(
        tenant_id=ACME,
        name="technician_revenue",
        category="business-unit-dashboard",
        report_id=123,
        parameters={"BusinessUnitIds": "1,2", "Status": "done"},
        window_days=3,
        enabled=True,
        created_at=declared.created_at,
    )
    assert before <= declared.created_at <= datetime.now(UTC) and declared.created_at.tzinfo is not None
    assert registry.report(ACME, "technician_revenue") == declared == registry.reports(ACME)[0]
    assert registry.reports(BOLT) == []
    # The defaults: one trailing day, enabled, no parameters.
    plain = registry.declare_report(BOLT, "calls", "marketing", 7, change=CHANGE)
    assert (plain.parameters, plain.window_days, plain.enabled) == ({}, 1, True)
    # The parameters are a JSON object in a text column.
    with registry.engine.connect() as conn:
        stored = conn.execute(
            sa.select(reports_table.c.parameters).where(reports_table.c.name == "technician_revenue")
        ).scalar_one()
    assert json.loads(stored) == {"BusinessUnitIds": "1,2", "Status": "done"}
    assert [(e.command, e.actor, e.detail) for e in registry.history(ACME, limit=1)] == [
        (
            "report add",
            "alice",
            "declared report technician_revenue: category business-unit-dashboard, report 123, "
            "BusinessUnitIds=1,2, Status=done, window 3 days",
        )
    ]


def test_a_declaration_may_be_stored_disabled(registry: TenantRegistry) -> None:
    declared = registry.declare_report(ACME, "calls", "marketing", 7, enabled=False, change=CHANGE)
    assert not declared.enabled and registry.reports(enabled_only=True) == []
    assert _details(registry, ACME) == [
        ("test", "declared report calls: category marketing, report 7, no parameters, window 1 day, disabled")
    ]


def test_the_same_name_replaces_a_declaration_only_when_asked(registry: TenantRegistry) -> None:
    first = registry.declare_report(ACME, "revenue", "accounting", 11, UNITS, 2, change=CHANGE)
    history = registry.history()
    with pytest.raises(
        ReportExistsError,
        match=r"^tenant 4101 already declares a report named revenue \(category accounting, report 11, "
        r"BusinessUnitIds=1,2, window 2 days\); replace it with `st-pipeline report add … --replace`",
    ):
        registry.declare_report(ACME, "revenue", "marketing", 12, change=CHANGE)
    assert registry.reports() == [first] and registry.history() == history

    # Another tenant may use the name; it is the tenant's own.
    registry.declare_report(BOLT, "revenue", "marketing", 12, change=CHANGE)

    replaced = registry.declare_report(
        ACME, "revenue", "marketing", 12, {"Region": "north"}, 5, change=Change("report add --replace"), replace=True
    )
    assert (replaced.category, replaced.report_id, replaced.parameters, replaced.window_days) == (
        "marketing",
        12,
        {"Region": "north"},
        5,
    )
    assert replaced.created_at >= first.created_at
    assert registry.reports(ACME) == [replaced]
    assert _details(registry, ACME)[-1] == (
        "report add --replace",
        "replaced report revenue: category marketing, report 12, Region=north, window 5 days "
        "(was category accounting, report 11, BusinessUnitIds=1,2, window 2 days)",
    )
    # replace=True with a new name simply declares it.
    assert registry.declare_report(ACME, "calls", "marketing", 7, change=CHANGE, replace=True).name == "calls"


def test_reports_are_listed_by_tenant_then_name(registry: TenantRegistry) -> None:
    for tenant_id, name in ((BOLT, "b_two"), (ACME, "zeta"), (BOLT, "a_one"), (ACME, "alpha"), (ACME, "mid")):
        registry.declare_report(tenant_id, name, "accounting", 1, change=CHANGE)
    registry.set_report_enabled(ACME, "mid", False, change=CHANGE)
    assert [(r.tenant_id, r.name) for r in registry.reports()] == [
        (ACME, "alpha"),
        (ACME, "mid"),
        (ACME, "zeta"),
        (BOLT, "a_one"),
        (BOLT, "b_two"),
    ]
    assert [r.name for r in registry.reports(ACME)] == ["alpha", "mid", "zeta"]
    assert [r.name for r in registry.reports(ACME, enabled_only=True)] == ["alpha", "zeta"]
    assert [(r.tenant_id, r.name) for r in registry.reports(enabled_only=True)] == [
        (ACME, "alpha"),
        (ACME, "zeta"),
        (BOLT, "a_one"),
        (BOLT, "b_two"),
    ]


def test_disable_enable_and_remove_each_with_an_audit_entry(registry: TenantRegistry) -> None:
    registry.declare_report(ACME, "revenue", "accounting", 11, UNITS, change=CHANGE)
    registry.declare_report(ACME, "calls", "marketing", 7, change=CHANGE)

    disabled = registry.set_report_enabled(ACME, "revenue", False, change=Change("report disable"))
    assert not disabled.enabled and not registry.report(ACME, "revenue").enabled
    assert [r.name for r in registry.reports(ACME, enabled_only=True)] == ["calls"]
    history = registry.history()
    assert registry.set_report_enabled(ACME, "revenue", False, change=CHANGE) == disabled  # already: no entry
    assert registry.history() == history
    assert registry.set_report_enabled(ACME, "revenue", True, change=Change("report enable")).enabled
    assert registry.report(ACME, "revenue").enabled

    removed = registry.remove_report(ACME, "calls", change=Change("report remove"))
    assert removed.name == "calls" and [r.name for r in registry.reports(ACME)] == ["revenue"]
    with pytest.raises(UnknownReportError):
        registry.report(ACME, "calls")
    assert _details(registry, ACME)[2:] == [
        ("report disable", "report revenue disabled"),
        ("report enable", "report revenue enabled"),
        ("report remove", "removed report calls (was category marketing, report 7, no parameters, window 1 day)"),
    ]


def test_an_unknown_report_is_refused_naming_the_tenants_reports(registry: TenantRegistry) -> None:
    with pytest.raises(
        UnknownReportError,
        match=r"^tenant 4101 has no report named 'revenue'; it declares none; declare one with "
        r"`st-pipeline report add`",
    ):
        registry.report(ACME, "revenue")
    registry.declare_report(ACME, "zeta", "accounting", 1, change=CHANGE)
    registry.declare_report(ACME, "alpha", "accounting", 1, change=CHANGE)
    registry.declare_report(BOLT, "revenue", "accounting", 1, change=CHANGE)
    history = registry.history()
    listed = r"^tenant 4101 has no report named 'revenue'; its reports are alpha, zeta \(`st-pipeline report list"
    for attempt in (
        lambda: registry.report(ACME, "revenue"),
        lambda: registry.remove_report(ACME, "revenue", change=CHANGE),
        lambda: registry.set_report_enabled(ACME, "revenue", False, change=CHANGE),
    ):
        with pytest.raises(UnknownReportError, match=listed):
            attempt()
    assert isinstance(UnknownReportError("x"), LookupError)
    assert registry.history() == history and len(registry.reports()) == 3


def test_an_unknown_tenant_is_refused_by_every_report_method(registry: TenantRegistry) -> None:
    for attempt in (
        lambda: registry.declare_report(9999, "revenue", "accounting", 1, change=CHANGE),
        lambda: registry.reports(9999),
        lambda: registry.report(9999, "revenue"),
        lambda: registry.remove_report(9999, "revenue", change=CHANGE),
        lambda: registry.set_report_enabled(9999, "revenue", True, change=CHANGE),
    ):
        with pytest.raises(UnknownTenantError, match="tenant 9999 is not registered"):
            attempt()
    assert registry.reports() == [] and registry.history(9999) == []


def test_a_removed_tenant_takes_its_reports_with_it(registry: TenantRegistry) -> None:
    registry.declare_report(ACME, "revenue", "accounting", 1, change=CHANGE)
    registry.declare_report(ACME, "calls", "marketing", 2, change=CHANGE)
    registry.declare_report(BOLT, "revenue", "accounting", 1, change=CHANGE)
    registry.remove(ACME, change=Change("tenant remove"))
    assert [(r.tenant_id, r.name) for r in registry.reports()] == [(BOLT, "revenue")]
    assert registry.history(ACME, limit=1)[0].detail == (
        "removed 'Acme' (credentials, status, endpoint flags and declared reports)"
    )
    # Registered again, it starts without them.
    registry.add(ACME, "Acme", "cid.acme", SecretStr("cs1.secret"), change=CHANGE)
    assert registry.reports(ACME) == []


def test_the_foreign_key_deletes_the_reports_of_a_tenant_deleted_by_hand(
    fresh_postgres: Callable[[], str],
) -> None:
    """On PostgreSQL the database itself keeps no report of a tenant that is gone."""
    registry = TenantRegistry(sa.create_engine(fresh_postgres()), SecretBox([generate_key()]))
    try:
        registry.add(ACME, "Acme", "cid.acme", SecretStr("cs1.secret"), change=CHANGE)
        registry.declare_report(ACME, "revenue", "accounting", 1, change=CHANGE)
        with registry.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM st_tenants WHERE tenant_id = :t"), {"t": ACME})
            left = conn.execute(sa.text("SELECT count(*) FROM st_tenant_reports")).scalar_one()
            with pytest.raises(sa.exc.IntegrityError):  # nor a report of a tenant that never was
                with conn.begin_nested():
                    conn.execute(
                        reports_table.insert().values(
                            tenant_id=9999,
                            name="orphan",
                            category="accounting",
                            report_id=1,
                            parameters="{}",
                            window_days=1,
                            enabled=True,
                            created_at=datetime.now(UTC),
                        )
                    )
        assert left == 0
    finally:
        registry.close()


# Each field wrong in turn, and what the refusal says.
_BAD_DECLARATIONS: list[tuple[dict[str, object], str]] = [
    ({"name": "Revenue"}, "report name must be a lowercase letter followed by lowercase letters"),
    ({"name": "raw-report"}, r"raw_report_<name>; got 'raw-report'"),
    ({"category": "two words"}, "report category must be 1 to 64 letters, digits, '_' or '-'"),
    ({"report_id": 0}, "report id must be a whole number between 1 and"),
    ({"parameters": {"From": "2026-01-01"}}, "report parameter 'From' is reserved: From and To come from"),
    ({"parameters": {"to": "2026-01-31"}}, "report parameter 'to' is reserved"),
    ({"parameters": {"1st": "x"}}, "report parameter name must be a letter followed by"),
    ({"parameters": {"Ids": "1", "IDS": "2"}}, r"report parameter 'IDS' is given twice \(also as 'Ids'\)"),
    ({"parameters": {"Ids": "1\n2"}}, "the value of report parameter Ids must be text on one line"),
    ({"window_days": 0}, "window days must be a whole number from 1 to 90"),
    ({"window_days": 91}, "window days must be a whole number from 1 to 90"),
]


def test_a_bad_declaration_is_refused_and_stores_nothing(registry: TenantRegistry) -> None:
    registry.declare_report(ACME, "kept", "accounting", 5, change=CHANGE)
    kept, history = registry.reports(), registry.history()
    for fields, message in _BAD_DECLARATIONS:
        declaration: dict[str, object] = {
            "name": "revenue",
            "category": "accounting",
            "report_id": 11,
            "parameters": None,
            "window_days": 1,
        } | fields
        with pytest.raises(InvalidReportDeclaration, match=message):
            registry.declare_report(ACME, change=CHANGE, **declaration)  # type: ignore[arg-type]
        # Not even as a replacement of a declaration that is there.
        with pytest.raises(InvalidReportDeclaration, match=message):
            registry.declare_report(ACME, change=CHANGE, replace=True, **(declaration | {"name": "kept"} | fields))  # type: ignore[arg-type]
    assert registry.reports() == kept and registry.history() == history


# -- what a declaration may hold ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["r", "revenue", "technician_revenue_2", "a" * 40, "x_"])
def test_report_names_that_may_be_part_of_a_table_name_are_accepted(name: str) -> None:
    assert validate_report_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Revenue", "2revenue", "_revenue", "tech-revenue", "tech revenue", "a" * 41, "révenue", "x;drop"]
)
def test_any_other_report_name_is_refused_saying_what_is_allowed(name: str) -> None:
    with pytest.raises(ValueError, match=r"lowercase letter followed by lowercase letters, digits or underscores, 40"):
        validate_report_name(name)


def test_categories_report_ids_and_window_days() -> None:
    assert validate_category("business-unit-dashboard") == "business-unit-dashboard"
    assert validate_category("a" * 64) == "a" * 64
    for bad_category in ("", "a" * 65, "a/b", "dashboard!"):
        with pytest.raises(ValueError, match="report category must be"):
            validate_category(bad_category)
    assert validate_report_id(1) == 1 and validate_report_id(2**63 - 1) == 2**63 - 1
    for bad_id in (0, -3, 2**63, True):
        with pytest.raises(ValueError, match="report id must be a whole number"):
            validate_report_id(bad_id)
    assert [validate_window_days(days) for days in (1, 90)] == [1, 90]
    for bad_days in (0, -1, 91, True):
        with pytest.raises(ValueError, match="window days must be"):
            validate_window_days(bad_days)


def test_parameters_are_checked_and_sorted_by_name() -> None:
    assert validate_parameters(None) == {}
    checked = validate_parameters({"Status": "done", "BusinessUnitIds": "1,2", "Empty": "", "X" * 64: "y"})
    assert list(checked) == ["BusinessUnitIds", "Empty", "Status", "X" * 64]
    for reserved in ("From", "To", "FROM", "to"):
        with pytest.raises(ValueError, match=f"report parameter '{reserved}' is reserved: From and To come from"):
            validate_parameters({reserved: "2026-01-01"})
    for bad_name in ("", "_x", "X" * 65, "Business Units", "Ids="):
        with pytest.raises(ValueError, match="report parameter name must be a letter"):
            validate_parameters({bad_name: "1"})
    with pytest.raises(ValueError, match="at most 50 parameters, got 51"):
        validate_parameters({f"P{n}": "1" for n in range(51)})
    with pytest.raises(ValueError, match="must be text on one line, at most 1000"):
        validate_parameters({"Long": "x" * 1001})


def test_created_at_of_a_replacement_is_new(registry: TenantRegistry) -> None:
    first = registry.declare_report(ACME, "revenue", "accounting", 1, change=CHANGE)
    with registry.engine.begin() as conn:  # as if declared a day ago
        conn.execute(reports_table.update().values(created_at=first.created_at - timedelta(days=1)))
    old = registry.report(ACME, "revenue").created_at
    assert old == first.created_at - timedelta(days=1)
    assert registry.declare_report(ACME, "revenue", "accounting", 2, change=CHANGE, replace=True).created_at > old
    # Disabling is no new declaration.
    assert registry.set_report_enabled(ACME, "revenue", False, change=CHANGE).created_at > old
