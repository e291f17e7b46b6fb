"""Generators of plausible leaf values (strings, numbers, timestamps), chosen by field name.

Every generator is a ``codegen`` expression that draws only from ``r()`` (the bound
``random.Random.random`` of the context) or ``c.rng``, so a record depends on nothing but its
seed. Text pools are computed once per field when the schema is compiled.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from st_pipeline.simulator.clock import (
    HISTORY_TICKS,
    REFERENCE_START_TICKS,
    TICKS_PER_DAY,
    day_string,
    format_ticks,
)
from st_pipeline.simulator.codegen import expression


class GenContext:
    """Per-dataset generation state shared by the compiled generators."""

    __slots__ = ("rng", "r", "refs", "pools", "shared")

    def __init__(self, rng: random.Random, pools: dict[str, list[Any]]) -> None:
        self.rng = rng
        self.r = rng.random
        # Reference targets chosen for the record being generated: kind → RefTarget.
        self.refs: dict[str, Any] = {}
        # Already generated core entities: kind → list of RefTarget.
        self.pools = pools
        # Values made once per run and reused by many records (see ``data._pooled``).
        self.shared: dict[object, list[Any]] = {}


Gen = Callable[[GenContext], Any]

_FIRST_NAMES = (
    "Alex",
    "Maria",
    "James",
    "Priya",
    "Chen",
    "Fatima",
    "Jordan",
    "Olga",
    "Luis",
    "Aisha",
    "Noah",
    "Emma",
    "Liam",
    "Sofia",
    "Mateo",
    "Grace",
    "Ethan",
    "Hana",
    "Omar",
    "Chloe",
)
_LAST_NAMES = (
    "Smith",
    "Garcia",
    "Nguyen",
    "Johnson",
    "Patel",
    "Kim",
    "Brown",
    "Martinez",
    "Lee",
    "Davis",
    "Lopez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Clark",
    "Lewis",
    "Young",
    "Hall",
)
_STREETS = (
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Lakeview Rd",
    "Sunset Blvd",
    "Park Ave",
    "Hillcrest Dr",
    "River Rd",
    "Brand Blvd",
)
_CITIES = (
    "Glendale",
    "Pasadena",
    "Burbank",
    "Austin",
    "Denver",
    "Phoenix",
    "Tampa",
    "Reno",
    "Boise",
    "Columbus",
    "Raleigh",
    "Tucson",
)
_STATES = ("CA", "TX", "CO", "AZ", "FL", "NV", "ID", "OH", "NC", "WA")
_WORDS = (
    "service",
    "repair",
    "install",
    "maintenance",
    "inspection",
    "replacement",
    "tune-up",
    "estimate",
    "follow-up",
    "warranty",
    "upgrade",
    "diagnostic",
)

# Plain-string fields whose values come from a fixed vocabulary (matched case-insensitively).
_NAMED_POOLS: dict[str, Sequence[str]] = {
    "firstname": _FIRST_NAMES,
    "lastname": _LAST_NAMES,
    "street": tuple(f"{n} {s}" for n in (12, 140, 801, 2210, 57, 930) for s in _STREETS),
    "streetaddress": tuple(f"{n} {s}" for n in (18, 402, 77) for s in _STREETS),
    "address": tuple(f"{n} {s}" for n in (25, 310) for s in _STREETS),
    "unit": ("Apt 1", "Suite 200", "Unit B", "#12"),
    "city": _CITIES,
    "state": _STATES,
    "country": ("USA",),
    "currency": ("USD",),
    "zip": ("91203", "78701", "80202", "85004", "33602", "89501", "83702", "43215"),
    "jobstatus": ("Scheduled", "Dispatched", "InProgress", "Hold", "Completed", "Canceled"),
    "priority": ("Low", "Normal", "High", "Urgent"),
    "syncstatus": ("Pending", "Posted", "Exported"),
    "createdby": ("admin", "dispatcher", "office", "api"),
    "modifiedby": ("admin", "dispatcher", "office", "api"),
    "termname": ("Due Upon Receipt", "Net 15", "Net 30"),
    "color": ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"),
}

# Accounting serializes money as decimal strings; these plain-string fields carry amounts.
_ACCOUNTING_MONEY = frozenset(
    {
        "total",
        "subtotal",
        "salestax",
        "balance",
        "price",
        "cost",
        "totalcost",
        "quantity",
        "amount",
        "unappliedamount",
        "appliedamount",
        "discounttotal",
        "memberprice",
        "allocatedothercosts",
        "allocatedshipping",
        "allocatedtax",
        "billamount",
        "fullylandedunitcost",
        "otheramount",
        "shippingamount",
        "taxamount",
        "vendorinvoicetotal",
    }
)


def humanize(name: str) -> str:
    """``customerPo`` → ``Customer po``; ``summaryOfWork`` → ``Summary of work``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").split()
    if not words:
        return "Item"
    text = " ".join(words).lower()
    return text[0].upper() + text[1:]


def choice(values: Sequence[Any]) -> Gen:
    """A uniformly chosen member of ``values``."""
    values = tuple(values)
    if len(values) == 1:
        return expression("$value", value=values[0])
    return expression(f"$values[int(r() * {len(values)})]", values=values)


def boolean() -> Gen:
    return expression("r() < 0.5")


def integer(field: str, fmt: str | None) -> Gen:
    lowered = field.lower()
    if fmt == "int64" and (lowered == "id" or lowered.endswith("id")):
        return expression("100000 + int(r() * 9900000)")
    if fmt == "int64":
        return expression("int(r() * 1000)")
    return expression("int(r() * 100)")


def number(field: str) -> Gen:
    lowered = field.lower()
    if lowered == "latitude":
        return expression("round(30.0 + r() * 15.0, 6)")
    if lowered == "longitude":
        return expression("round(-120.0 + r() * 40.0, 6)")
    if "rate" in lowered or "percent" in lowered:
        return expression("int(r() * 3000) / 100")
    return expression("int(r() * 100000) / 100")  # two decimals, like a price


def timestamp() -> Gen:
    """A date-time within the generated history window."""
    return expression(f"$format({REFERENCE_START_TICKS} + int(r() * {HISTORY_TICKS}))", format=format_ticks)


def calendar_date() -> Gen:
    first_day = REFERENCE_START_TICKS // TICKS_PER_DAY
    days = HISTORY_TICKS // TICKS_PER_DAY
    return expression(f"$day({first_day} + int(r() * {days}))", day=day_string)


def _money_string() -> Gen:
    return expression('f"{r() * 1000.0:.2f}"')


def _guid() -> Gen:
    return expression("str($uuid(int=c.rng.getrandbits(128), version=4))", uuid=uuid.UUID)


def string(field: str, fmt: str | None, module: str, resource_title: str) -> Gen:
    """A plain string for ``field``; ``resource_title`` names top-level records (``Job 12``)."""
    lowered = field.lower()
    if fmt == "date-time":
        return timestamp()
    if fmt == "date":
        return calendar_date()
    if fmt == "duration":
        return choice(("00:15:00", "00:30:00", "01:00:00", "02:00:00", "04:00:00"))
    if fmt == "guid" or lowered.endswith("guid"):
        return _guid()
    if module == "accounting" and lowered in _ACCOUNTING_MONEY:
        if lowered == "quantity":
            return expression('f"{1 + int(r() * 5)}.00"')
        return _money_string()
    if fmt == "email" or lowered.endswith("email"):
        return choice(
            tuple(
                f"{first.lower()}.{last.lower()}@example.com" for first in _FIRST_NAMES[:8] for last in _LAST_NAMES[:4]
            )
        )
    if fmt == "phone" or "phone" in lowered or lowered == "fax":
        return choice(tuple(f"555{n:07d}" for n in range(1000, 1064, 3)))
    if lowered in _NAMED_POOLS:
        return choice(_NAMED_POOLS[lowered])
    if lowered == "name" and resource_title in ("Customer", "Technician", "Employee", "Contact"):
        return choice(tuple(f"{first} {last}" for first in _FIRST_NAMES for last in _LAST_NAMES))
    if lowered == "name":
        return choice(tuple(f"{resource_title} {n}" for n in range(1, 41)))
    if lowered.endswith("number") or lowered in ("code", "po", "customerpo"):
        return expression("str(1000 + int(r() * 90000))")
    if lowered.endswith("url") or lowered.endswith("path"):
        return choice(tuple(f"https://files.example.com/{lowered}/{n}" for n in range(1, 9)))
    if fmt in ("html", "multiline") or lowered in (
        "summary",
        "memo",
        "description",
        "note",
        "text",
        "message",
        "instructions",
    ):
        return choice(tuple(f"{humanize(field)}: {a} and {b}" for a in _WORDS for b in _WORDS[:5]))
    title = humanize(field)
    return choice(tuple(f"{title} {n}" for n in range(1, 25)))
