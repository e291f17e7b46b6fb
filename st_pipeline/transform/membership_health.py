"""Membership health: memberships that start, are canceled and expire, the members at the end of each
day, and how many recurring service visits were won.

A membership is active from its start (``from``) day until the end of the day before it ends. It ends
on its cancellation day (a Canceled one) or on its ``to`` day, whichever comes first; a Canceled or
Expired membership without that date ends on the day of its latest status change to that status,
else on its start day (never active). Nothing dated after the build day counts yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from st_pipeline.transform.expressions import flag, live
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
    rate,
    zero,
)

CANCELED, EXPIRED = "Canceled", "Expired"
WON, DISMISSED = "Won", "Dismissed"
_NAMES = (
    "entity_id",
    "day",
    "new_memberships",
    "canceled_memberships",
    "expired_memberships",
    "service_events_due",
    "service_events_won",
    "service_events_dismissed",
)


def _membership_days(scope: Scope) -> sa.Subquery:
    """Per live membership of the tenant with a start: its start day, and the days it is canceled and
    expires (NULL when it does not, or not yet known)."""
    m, sc = hub_alias("memberships", "m"), hub_alias("membership_status_changes", "sc")
    start = scope.day(m.c.valid_from)

    def changed_to(status: str) -> Expression:
        latest = sa.select(sa.func.max(sc.c.created_on)).where(
            scope.tenant(sc), sc.c.membership_id == m.c.id, sc.c.new_status == status, sc.c.deleted_at.is_(None)
        )
        return scope.day(latest.scalar_subquery())

    status = sa.func.coalesce(m.c.status, "")
    canceled = sa.case(
        (status == CANCELED, sa.func.coalesce(scope.day(m.c.cancellation_date), changed_to(CANCELED), start)),
    )
    expires = sa.case(
        (m.c.valid_to.is_not(None), scope.day(m.c.valid_to)),
        (status == EXPIRED, sa.func.coalesce(changed_to(EXPIRED), start)),
    )
    return (
        sa.select(m.c.id, start.label("start"), canceled.label("canceled"), expires.label("expires"))
        .where(scope.tenant(m), live(m), m.c.valid_from.is_not(None), scope.chosen(m.c.id))
        .subquery("md")
    )


def _health_facts(scope: Scope) -> sa.Select[Any]:
    """Memberships (a row on their start day and one on the day they end) and recurring service events
    (on their day), up to the build day. Entities are membership and event ids (an id of both kinds is
    recomputed for both, which is harmless)."""
    md, build_day = _membership_days(scope), scope.build_day()
    by_cancellation = sa.and_(md.c.canceled.is_not(None), sa.or_(md.c.expires.is_(None), md.c.canceled <= md.c.expires))
    ends = sa.case((by_cancellation, md.c.canceled), else_=md.c.expires)
    end_day = sa.case((ends < md.c.start, md.c.start), else_=ends)  # never before it started
    started = sa.select(
        *(value.label(name) for value, name in zip((md.c.id, md.c.start, one(), *[zero()] * 5), _NAMES, strict=True))
    ).where(md.c.start <= build_day)
    ended = sa.select(
        md.c.id, end_day, zero(), flag(by_cancellation), flag(sa.not_(by_cancellation)), zero(), zero(), zero()
    ).where(ends.is_not(None), end_day <= build_day)
    e = hub_alias("recurring_service_events", "e")
    event_day = scope.day(e.c.event_date)
    events = sa.select(
        e.c.id,
        event_day,
        zero(),
        zero(),
        zero(),
        one(),
        flag(e.c.status == WON),
        flag(e.c.status == DISMISSED),
    ).where(scope.tenant(e), live(e), e.c.event_date.is_not(None), event_day <= build_day, scope.chosen(e.c.id))
    return sa.select(sa.union_all(started, ended, events).subquery("health"))


def _active(row: Mapping[str, Expression], window: Mapping[str, Expression]) -> Expression:
    return window["new_memberships"] - window["canceled_memberships"] - window["expired_memberships"]


MEMBERSHIP_HEALTH = Mart(
    "membership_health",
    "Memberships per day (the tenant's calendar): new (starting that day: the sale), canceled (its cancellation "
    "day) and expired (its to day, when it was not canceled before); active_members: memberships active at the "
    "end of the day (started on or before it, not yet canceled or expired), a running total over every earlier "
    "day. Recurring service events by their day: due, won (a job done for them; service_completion_rate = "
    "won / due) and dismissed. Nothing dated after the build day counts, so the first build of each day is a "
    "full one. Renewals are not told apart (no hub table carries renewedById yet).",
    group=(DAY_COLUMN,),
    measures=(
        col("new_memberships", INT),
        col("canceled_memberships", INT),
        col("expired_memberships", INT),
        col("service_events_due", INT),
        col("service_events_won", INT),
        col("service_events_dismissed", INT),
    ),
    derived=((col("service_completion_rate", R), rate("service_events_won", "service_events_due")),),
    trailing=((col("active_members", INT), _active),),
    window_days=None,
    reads=("hub_memberships", "hub_membership_status_changes", "hub_recurring_service_events"),
    facts=_health_facts,
    links=(
        Link("hub_memberships", own("memberships")),
        Link("hub_membership_status_changes", own("membership_status_changes", "membership_id")),
        Link("hub_recurring_service_events", own("recurring_service_events")),
    ),
    daily=True,
    headline=(("new_memberships_last_30_days", "new_memberships", 30),),
)
