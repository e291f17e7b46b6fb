"""Operations: each technician's booked time against the time their shifts make available.

``dispatch/capacity`` answers one query at a time (a POST per business unit and window) and is not
extracted, so capacity is built from what is: technician shifts (available time) and appointment
assignments (booked time).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from st_pipeline.transform.expressions import live, minutes_between, ratio
from st_pipeline.transform.mart_parts import (
    DAY_COLUMN,
    INT,
    Expression,
    Link,
    Mart,
    R,
    Scope,
    col,
    hub_alias,
    one,
    own,
    pointing,
    zero,
)

# A shift of this type is time a technician can be booked; the other types are shown apart.
AVAILABLE_SHIFT, ON_CALL_SHIFT, TIME_OFF_SHIFT = "Normal", "OnCall", "TimeOff"


def _minutes(start: Expression, end: Expression) -> Expression:
    """Minutes from ``start`` to ``end``, 0 when the end is not after the start."""
    return sa.case((end > start, minutes_between(end, start)), else_=0)


def _shift_facts(scope: Scope) -> sa.Select[Any]:
    """One row per live shift, on the day it starts: its minutes by shift type."""
    s = hub_alias("technician_shifts", "s")
    minutes = _minutes(s.c.start_at, s.c.end_at)

    def of_type(kind: str) -> Expression:
        return sa.case((s.c.shift_type == kind, minutes), else_=0)

    return sa.select(
        s.c.id.label("entity_id"),
        scope.day(s.c.start_at).label("day"),
        s.c.technician_id,
        of_type(AVAILABLE_SHIFT).label("available_minutes"),
        of_type(ON_CALL_SHIFT).label("on_call_minutes"),
        of_type(TIME_OFF_SHIFT).label("time_off_minutes"),
        zero().label("appointments"),
        zero().label("booked_minutes"),
    ).where(
        scope.tenant(s),
        live(s),
        s.c.technician_id.is_not(None),
        s.c.start_at.is_not(None),
        s.c.end_at.is_not(None),
        scope.chosen(s.c.id),
    )


def _booking_facts(scope: Scope) -> sa.Select[Any]:
    """One row per live assignment of a technician to an appointment that is not canceled, on the
    appointment's day: the appointment's scheduled minutes."""
    a, ap = hub_alias("appointment_assignments", "a"), hub_alias("appointments", "ap")
    return (
        sa.select(
            a.c.id,
            scope.day(ap.c.start_at),
            a.c.technician_id,
            zero(),
            zero(),
            zero(),
            one(),
            _minutes(ap.c.start_at, ap.c.end_at),
        )
        .select_from(a.join(ap, sa.and_(ap.c.tenant_id == a.c.tenant_id, ap.c.id == a.c.appointment_id)))
        .where(
            scope.tenant(a),
            live(a),
            live(ap),
            sa.func.coalesce(ap.c.status, "") != "Canceled",
            a.c.technician_id.is_not(None),
            ap.c.start_at.is_not(None),
            ap.c.end_at.is_not(None),
            scope.chosen(a.c.id),
        )
    )


def _capacity_facts(scope: Scope) -> sa.Select[Any]:
    """Shifts and bookings together (entities are shift and assignment ids; an id of both kinds is
    recomputed for both, which is harmless)."""
    return sa.select(sa.union_all(_shift_facts(scope), _booking_facts(scope)).subquery("capacity"))


TECHNICIAN_CAPACITY = Mart(
    "technician_capacity",
    "Booked against available time per day (the tenant's calendar) and technician. Available: the minutes "
    f"of the technician's {AVAILABLE_SHIFT} shifts; on-call and time-off shifts are shown apart and not "
    "subtracted. Booked: the scheduled minutes (start to end) of the appointments the technician is "
    "assigned to (assignments and appointments live, appointments not Canceled). A shift or an appointment "
    "counts on the day it starts. capacity_use = booked / available (NULL without a shift; above 1 when "
    "overbooked).",
    group=(DAY_COLUMN, col("technician_id", INT)),
    measures=(
        col("available_minutes", INT),
        col("on_call_minutes", INT),
        col("time_off_minutes", INT),
        col("appointments", INT),
        col("booked_minutes", INT),
    ),
    derived=(
        (col("capacity_use", R), lambda m: ratio(m["booked_minutes"], m["available_minutes"])),
        (col("unbooked_minutes", INT), lambda m: m["available_minutes"] - m["booked_minutes"]),
    ),
    reads=("hub_technician_shifts", "hub_appointment_assignments", "hub_appointments"),
    facts=_capacity_facts,
    links=(
        Link("hub_technician_shifts", own("technician_shifts")),
        Link("hub_appointment_assignments", own("appointment_assignments")),
        Link("hub_appointments", pointing("appointment_assignments", "appointment_id")),
    ),
    headline=(
        ("available_minutes_last_30_days", "available_minutes", 30),
        ("booked_minutes_last_30_days", "booked_minutes", 30),
    ),
)
