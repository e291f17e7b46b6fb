"""The ServiceTitan reports an operator declares per tenant, and what a declaration may hold.

A declaration names one report of the tenant's ServiceTitan (its category and id), under a name of
our own that becomes part of a warehouse table name (``raw_report_<name>``), with the report's
fixed parameters. The period parameters (``From``, ``To``) are not declared: each run sets them
from the days it reads, the last ``window_days`` days on a scheduled run. The registry stores the
declarations (``TenantRegistry.declare_report`` and its neighbours); the checks here run before
anything is stored, and each raises ``InvalidReportDeclaration`` saying what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from st_pipeline.tenants.tables import MAX_REPORT_CATEGORY_LENGTH, MAX_REPORT_NAME_LENGTH
from st_pipeline.tenants.validation import InvalidTenantInput, printable

__all__ = [
    "MAX_PARAMETERS",
    "MAX_REPORT_ID",
    "MAX_WINDOW_DAYS",
    "RESERVED_PARAMETERS",
    "InvalidReportDeclaration",
    "ReportDeclaration",
    "ReportExistsError",
    "UnknownReportError",
    "validate_category",
    "validate_parameter_name",
    "validate_parameters",
    "validate_report_id",
    "validate_report_name",
    "validate_window_days",
]

_NAME = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_REPORT_NAME_LENGTH - 1}}}")
_CATEGORY = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_REPORT_CATEGORY_LENGTH}}}")
_PARAMETER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# Set by each run from the period it reads, so never declared (compared without case).
RESERVED_PARAMETERS = ("From", "To")
MAX_PARAMETERS = 50
MAX_PARAMETER_VALUE_LENGTH = 1000
MAX_REPORT_ID = 2**63 - 1  # stored as a signed 64-bit integer
MAX_WINDOW_DAYS = 90


class InvalidReportDeclaration(InvalidTenantInput):
    """A report declaration that cannot be stored (a ``ValueError``): the message says what is allowed."""


@dataclass(frozen=True)
class ReportDeclaration:
    """One ServiceTitan report to extract for a tenant, as the operator declared it.

    ``name``: our name of it (``validate_report_name``), unique per tenant; its warehouse table is
    ``raw_report_<name>``. ``category`` and ``report_id``: the report in ServiceTitan's reporting
    API. ``parameters``: its fixed, non-date parameters (``{"BusinessUnitIds": "1,2"}``); ``From``
    and ``To`` come from each run's period. ``window_days``: how many trailing days each scheduled
    run re-reads (1 to 90). ``enabled``: False keeps the declaration but extracts nothing.
    ``created_at``: when this declaration was stored (a replacing declaration is a new one).
    """

    tenant_id: int
    name: str
    category: str
    report_id: int
    parameters: dict[str, str]
    window_days: int
    enabled: bool
    created_at: datetime


def validate_report_name(name: str) -> str:
    """A lowercase slug: a letter, then letters, digits or underscores, 40 characters at most."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    raise InvalidReportDeclaration(
        f"report name must be a lowercase letter followed by lowercase letters, digits or underscores, "
        f"{MAX_REPORT_NAME_LENGTH} characters at most (like technician_revenue): it becomes part of the "
        f"table name raw_report_<name>; got {_shown(name)}"
    )


def validate_category(category: str) -> str:
    """ServiceTitan's report category id: 1 to 64 letters, digits, ``_`` or ``-``."""
    if isinstance(category, str) and _CATEGORY.fullmatch(category):
        return category
    raise InvalidReportDeclaration(
        f"report category must be 1 to {MAX_REPORT_CATEGORY_LENGTH} letters, digits, '_' or '-' (the category "
        f"id ServiceTitan shows for the report, like business-unit-dashboard); got {_shown(category)}"
    )


def validate_report_id(report_id: int) -> int:
    """ServiceTitan's id of the report: a positive whole number."""
    if isinstance(report_id, int) and not isinstance(report_id, bool) and 0 < report_id <= MAX_REPORT_ID:
        return report_id
    raise InvalidReportDeclaration(
        f"report id must be a whole number between 1 and {MAX_REPORT_ID} (ServiceTitan's id of the report); "
        f"got {_shown(report_id)}"
    )


def validate_parameter_name(name: str) -> str:
    """A letter, then letters, digits or underscores, 64 characters at most; not ``From`` or ``To``."""
    if not (isinstance(name, str) and _PARAMETER.fullmatch(name)):
        raise InvalidReportDeclaration(
            "report parameter name must be a letter followed by letters, digits or underscores, 64 characters "
            f"at most (like BusinessUnitIds); got {_shown(name)}"
        )
    reserved = [word for word in RESERVED_PARAMETERS if word.casefold() == name.casefold()]
    if reserved:
        raise InvalidReportDeclaration(
            f"report parameter {name!r} is reserved: {' and '.join(RESERVED_PARAMETERS)} come from the period of "
            "each run (on a scheduled run, its last window days: --window-days), so they are never declared; "
            "drop it"
        )
    return name


def validate_parameters(parameters: Mapping[str, str] | None) -> dict[str, str]:
    """Fixed report parameters: valid names (``validate_parameter_name``), each once whatever its case,
    text values of one printable line (at most 1000 characters), at most 50 of them; sorted by name."""
    checked: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, value in (parameters or {}).items():
        validate_parameter_name(name)
        if name.casefold() in seen:
            raise InvalidReportDeclaration(
                f"report parameter {name!r} is given twice (also as {seen[name.casefold()]!r}); give each once"
            )
        seen[name.casefold()] = name
        if not isinstance(value, str) or len(value) > MAX_PARAMETER_VALUE_LENGTH or not value.isprintable():
            raise InvalidReportDeclaration(
                f"the value of report parameter {name} must be text on one line, at most "
                f"{MAX_PARAMETER_VALUE_LENGTH} printable characters (like 1,2 or true); got {_shown(value)}"
            )
        checked[name] = value
    if len(checked) > MAX_PARAMETERS:
        raise InvalidReportDeclaration(f"a report takes at most {MAX_PARAMETERS} parameters, got {len(checked)}")
    return dict(sorted(checked.items()))


def validate_window_days(window_days: int) -> int:
    """How many trailing days a scheduled run re-reads: 1 to 90."""
    if isinstance(window_days, int) and not isinstance(window_days, bool) and 1 <= window_days <= MAX_WINDOW_DAYS:
        return window_days
    raise InvalidReportDeclaration(
        f"window days must be a whole number from 1 to {MAX_WINDOW_DAYS} (how many trailing days each scheduled "
        f"run re-reads); got {_shown(window_days)}"
    )


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(printable(value)[:70]) if value else "an empty value"
    return printable(repr(value))[:70]


class ReportExistsError(ValueError):
    """A report of that name is already declared for the tenant (and replacing it was not asked for)."""


class UnknownReportError(LookupError):
    """No report of that name is declared for the tenant; the message lists the ones that are."""

    def __str__(self) -> str:
        return str(self.args[0])
