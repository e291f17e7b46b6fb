"""Golden tests of the operations and membership-health marts, and their incremental builds.

As in ``test_kpi_golden``, the records are ServiceTitan-shaped payloads loaded the way a sync loads
them, and every expected value is a literal worked out by hand, with the arithmetic in a comment.

The scenario (tenant 7201, UTC, built as of 2024-04-15):

Shifts: 6101 Alice (101) Normal 03-01 08:00-17:00; 6102 Alice OnCall 03-01 17:00-21:00; 6103 Bob (102)
Normal 03-01 08:00-12:30; 6104 Bob TimeOff 03-02 08:00-17:00; 6105 Alice Normal 03-02, inactive.
Appointments: 6201 03-01 09:00-11:00 (Alice and Bob); 6202 03-01 13:00-14:30 (Alice); 6203 03-01
15:00-16:00 Canceled (Alice); 6204 03-02 10:00-11:15 (Bob; Alice's assignment 6306 inactive).

Memberships: 8101 from 01-10, open-ended; 8102 01-10..03-31 (status still Active); 8103 from 02-01,
Canceled on 03-15; 8104 from 02-01, Canceled without a date (its status change on 02-20); 8105 from
04-20 (after the build day); 8106 03-01..06-30; 8107 from 02-01, inactive; 8108 from 03-01, Expired
without a date or change (never active); 8109 from 01-10, Canceled on 01-05 (before it started).
Recurring service events: 8201 03-01 Won; 8202 03-01 Contacted; 8203 03-15 Dismissed; 8204 04-30
NotAttempted (after the build day); 8205 03-15 Won but inactive.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.transform.build import build_tenant
from st_pipeline.warehouse.loader import raw_rows, upsert_rows
from st_pipeline.warehouse.tables import raw_table
from st_pipeline_tests.support import prepared_warehouse
from st_pipeline_tests.transform.test_kpi_golden import (
    assert_types,
    datasets_of,
    day,
    load_tenant,
    mart_rows,
    membership,
    rec,
)

OPERATIONS_TENANT = 7201
AS_OF = date(2024, 4, 15)


def shift(shift_id: int, technician: int, kind: str, start: str, end: str, active: bool = True) -> dict[str, Any]:
    return rec(
        shift_id,
        active,
        technicianId=technician,
        shiftType=kind,
        title=kind,
        note=None,
        start=start,
        end=end,
        timesheetCodeId=None,
    )


def visit(appointment_id: int, job_id: int, start: str, end: str, status: str = "Done") -> dict[str, Any]:
    return rec(
        appointment_id,
        jobId=job_id,
        customerId=1001,
        appointmentNumber=f"{job_id}-{appointment_id}",
        status=status,
        start=start,
        end=end,
        arrivalWindowStart=None,
        arrivalWindowEnd=None,
        isConfirmed=True,
    )


def assigned(assignment_id: int, appointment_id: int, technician: int, active: bool = True) -> dict[str, Any]:
    return rec(
        assignment_id,
        active,
        appointmentId=appointment_id,
        jobId=5201,
        technicianId=technician,
        technicianName=f"Tech {technician}",
        status="Done",
        assignedOn="2024-02-20T08:00:00Z",
        isPaused=False,
    )


def status_change(change_id: int, membership_id: int, new: str, on: str) -> dict[str, Any]:
    return {
        "id": change_id,
        "membershipId": membership_id,
        "oldStatus": "Active",
        "newStatus": new,
        "createdOn": on,
        "createdById": 1,
    }


def service_event(event_id: int, on: str, status: str, job_id: int | None = None, active: bool = True) -> dict:
    return rec(
        event_id,
        active,
        membershipId=8101,
        membershipName="Comfort Club",
        locationRecurringServiceId=1,
        date=on,
        status=status,
        jobId=job_id,
    )


def midnight(day_text: str) -> str:
    return f"{day_text}T00:00:00Z"


OPERATIONS_RECORDS: dict[str, list[dict[str, Any]]] = {
    "dispatch/technician-shifts": [
        shift(6101, 101, "Normal", "2024-03-01T08:00:00Z", "2024-03-01T17:00:00Z"),
        shift(6102, 101, "OnCall", "2024-03-01T17:00:00Z", "2024-03-01T21:00:00Z"),
        shift(6103, 102, "Normal", "2024-03-01T08:00:00Z", "2024-03-01T12:30:00Z"),
        shift(6104, 102, "TimeOff", "2024-03-02T08:00:00Z", "2024-03-02T17:00:00Z"),
        shift(6105, 101, "Normal", "2024-03-02T08:00:00Z", "2024-03-02T17:00:00Z", active=False),
    ],
    "jpm/appointments": [
        visit(6201, 5201, "2024-03-01T09:00:00Z", "2024-03-01T11:00:00Z"),
        visit(6202, 5201, "2024-03-01T13:00:00Z", "2024-03-01T14:30:00Z"),
        visit(6203, 5202, "2024-03-01T15:00:00Z", "2024-03-01T16:00:00Z", status="Canceled"),
        visit(6204, 5202, "2024-03-02T10:00:00Z", "2024-03-02T11:15:00Z"),
    ],
    "dispatch/appointment-assignments": [
        assigned(6301, 6201, 101),
        assigned(6302, 6201, 102),
        assigned(6303, 6202, 101),
        assigned(6304, 6203, 101),
        assigned(6305, 6204, 102),
        assigned(6306, 6204, 101, active=False),
    ],
    "memberships/memberships": [
        membership(8101, 2001, midnight("2024-01-10"), None),
        membership(8102, 2002, midnight("2024-01-10"), midnight("2024-03-31")),
        membership(
            8103, 2003, midnight("2024-02-01"), midnight("2025-01-31"), "Canceled", canceled=midnight("2024-03-15")
        ),
        membership(8104, 2004, midnight("2024-02-01"), None, "Canceled"),
        membership(8105, 2005, midnight("2024-04-20"), None),
        membership(8106, 2006, midnight("2024-03-01"), midnight("2024-06-30")),
        membership(8107, 2007, midnight("2024-02-01"), None, active=False),
        membership(8108, 2008, midnight("2024-03-01"), None, "Expired"),
        membership(8109, 2009, midnight("2024-01-10"), None, "Canceled", canceled=midnight("2024-01-05")),
    ],
    "memberships/membership-status-changes": [
        status_change(8904, 8104, "Canceled", "2024-02-20T15:00:00Z"),
        status_change(8903, 8103, "Canceled", "2024-03-15T09:00:00Z"),
    ],
    "memberships/recurring-service-events": [
        service_event(8201, midnight("2024-03-01"), "Won", job_id=5201),
        service_event(8202, midnight("2024-03-01"), "Contacted"),
        service_event(8203, midnight("2024-03-15"), "Dismissed"),
        service_event(8204, midnight("2024-04-30"), "NotAttempted"),
        service_event(8205, midnight("2024-03-15"), "Won", job_id=5202, active=False),
    ],
}


@pytest.fixture(params=["sqlite", "postgresql"])
def operations(request: pytest.FixtureRequest, tmp_path: Path) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'w.db'}" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres")()
    engine = prepared_warehouse(url, datasets_of(OPERATIONS_RECORDS))
    load_tenant(engine, OPERATIONS_TENANT, OPERATIONS_RECORDS)
    build_tenant(engine, OPERATIONS_TENANT, "operations", as_of=AS_OF)
    request.addfinalizer(engine.dispose)
    return engine


def _capacity(available: int, booked: int, appointments: int, on_call: int = 0, time_off: int = 0) -> dict[str, Any]:
    return {
        "available_minutes": available,
        "on_call_minutes": on_call,
        "time_off_minutes": time_off,
        "appointments": appointments,
        "booked_minutes": booked,
        "capacity_use": booked / available if available else None,
        "unbooked_minutes": available - booked,
    }


def test_technician_capacity(operations: sa.Engine) -> None:
    """Booked minutes against the minutes of Normal shifts, per day and technician."""
    rows = mart_rows(operations, "technician_capacity", OPERATIONS_TENANT)
    counts = ("available_minutes", "on_call_minutes", "time_off_minutes", "appointments", "booked_minutes")
    assert_types(rows, (), (*counts, "unbooked_minutes"), ("capacity_use",))
    assert rows == {
        # Alice: shift 540 min (9 h), on call 240 apart; booked 6201 (120) + 6202 (90) = 210; 6203 canceled.
        (day("2024-03-01"), 101): _capacity(540, 210, 2, on_call=240),
        # Bob: shift 270 min (4.5 h); booked 6201 (120).
        (day("2024-03-01"), 102): _capacity(270, 120, 1),
        # Bob is off (540 min of time off, no Normal shift) but booked for 6204 (75): use NULL, -75 unbooked.
        # Alice's shift 6105 and her assignment 6306 that day are inactive: no row.
        (day("2024-03-02"), 102): _capacity(0, 75, 1, time_off=540),
    }


def _health(new: int, canceled: int, expired: int, active: int, events: tuple[int, int, int] = (0, 0, 0)) -> dict:
    due, won, dismissed = events
    return {
        "new_memberships": new,
        "canceled_memberships": canceled,
        "expired_memberships": expired,
        "service_events_due": due,
        "service_events_won": won,
        "service_events_dismissed": dismissed,
        "service_completion_rate": won / due if due else None,
        "active_members": active,
    }


def test_membership_health(operations: sa.Engine) -> None:
    """New, canceled and expired memberships, active members at the end of each day, service events."""
    rows = mart_rows(operations, "membership_health", OPERATIONS_TENANT)
    counts = ("new_memberships", "canceled_memberships", "expired_memberships", "active_members")
    assert_types(rows, (), counts, ("service_completion_rate",))
    assert rows == {
        # 8101, 8102, 8109 start; 8109 was canceled before it started: it ends the day it starts. 3 - 1 = 2.
        (day("2024-01-10"),): _health(3, 1, 0, 2),
        # 8103, 8104 start (8107 is inactive): 2 + 2 = 4.
        (day("2024-02-01"),): _health(2, 0, 0, 4),
        # 8104 Canceled without a date: the day of its status change. 4 - 1 = 3.
        (day("2024-02-20"),): _health(0, 1, 0, 3),
        # 8106 and 8108 start; 8108 is Expired with no date to go by: ended the day it started. 3 + 2 - 1 = 4.
        # Events 8201 (Won) and 8202 (Contacted): 1 of 2.
        (day("2024-03-01"),): _health(2, 0, 1, 4, (2, 1, 0)),
        # 8103 canceled: 4 - 1 = 3. Event 8203 dismissed (8205 is inactive): 0 of 1.
        (day("2024-03-15"),): _health(0, 1, 0, 3, (1, 0, 1)),
        # 8102's to day: expired (still Active in its status). 3 - 1 = 2: 8101 and 8106, as on the build day.
        # 8105 (starts 04-20), 8106's to day (06-30) and event 8204 (04-30) are after the build day.
        (day("2024-03-31"),): _health(0, 0, 1, 2),
    }


LATER = datetime(2024, 4, 15, 18, 0, tzinfo=UTC)


def _changes() -> dict[str, list[dict[str, Any]]]:
    return {
        # Bob's shift ends at 13:00 instead of 12:30; 6202 moves to 03-02 (Alice's booked time moves).
        "dispatch/technician-shifts": [shift(6103, 102, "Normal", "2024-03-01T08:00:00Z", "2024-03-01T13:00:00Z")],
        "jpm/appointments": [visit(6202, 5201, "2024-03-02T13:00:00Z", "2024-03-02T14:30:00Z")],
        # 8101 canceled on 03-20; 8102's status change to Expired; event 8202 won after all.
        "memberships/memberships": [
            membership(8101, 2001, midnight("2024-01-10"), None, "Canceled", canceled=midnight("2024-03-20"))
        ],
        "memberships/membership-status-changes": [status_change(8905, 8102, "Expired", "2024-03-31T23:00:00Z")],
        "memberships/recurring-service-events": [service_event(8202, midnight("2024-03-01"), "Won", job_id=5201)],
    }


def test_incremental_builds_of_operations_and_membership_health_equal_full_builds(tmp_path: Path) -> None:
    engine = prepared_warehouse(f"sqlite:///{tmp_path / 'w.db'}", datasets_of(OPERATIONS_RECORDS))
    names = ("technician_capacity", "membership_health")
    try:
        load_tenant(engine, OPERATIONS_TENANT, OPERATIONS_RECORDS)
        build_tenant(engine, OPERATIONS_TENANT, "first", as_of=AS_OF)
        with engine.begin() as conn:
            catalogue = load_catalogue()
            for key, records in _changes().items():
                rows = raw_rows(OPERATIONS_TENANT, records, extracted_at=LATER, run_id="r2")
                upsert_rows(conn, raw_table(catalogue.dataset(key)), rows)
        incremental = build_tenant(engine, OPERATIONS_TENANT, "second", as_of=AS_OF)
        after = {name: mart_rows(engine, name, OPERATIONS_TENANT) for name in names}
        build_tenant(engine, OPERATIONS_TENANT, "full", as_of=AS_OF, full=True)
        full = {name: mart_rows(engine, name, OPERATIONS_TENANT) for name in names}
        # Nothing changed, but a build as of a later day rebuilds the daily marts: 8105 (from 04-20) is new.
        next_week = build_tenant(engine, OPERATIONS_TENANT, "next-week", as_of=date(2024, 4, 25))
        later_health = mart_rows(engine, "membership_health", OPERATIONS_TENANT)
    finally:
        engine.dispose()
    modes = {m.table: m.mode for m in incremental.marts}
    assert modes == {"mart_technician_capacity": "incremental", "mart_membership_health": "incremental"}
    capacity, health = after["technician_capacity"], after["membership_health"]
    assert capacity[(day("2024-03-01"), 101)]["booked_minutes"] == 120  # 6202's 90 minutes left the day
    assert capacity[(day("2024-03-02"), 101)]["booked_minutes"] == 90  # ... for 03-02 (no shift: use NULL)
    assert capacity[(day("2024-03-01"), 102)]["available_minutes"] == 300  # 08:00-13:00
    assert health[(day("2024-03-20"),)]["canceled_memberships"] == 1
    assert health[(day("2024-03-31"),)]["active_members"] == 1  # 8106 only: 8101 canceled on 03-20
    assert health[(day("2024-03-01"),)]["service_events_won"] == 2
    assert after == full
    assert {m.table: m.mode for m in next_week.marts} == {
        "mart_accounts_receivable": "full",
        "mart_membership_health": "full",
    }
    assert later_health[(day("2024-04-20"),)]["new_memberships"] == 1
