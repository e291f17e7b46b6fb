"""The read endpoints: export feeds, paged lists and unpaged lookups.

Each handler turns a dataset store and a query string into a JSON body (``bytes`` joined from
the records' stored JSON). Validation problems raise ``ApiError`` (HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from st_pipeline.servicetitan.catalogue import Endpoint
from st_pipeline.simulator.clock import parse_ticks
from st_pipeline.simulator.errors import ApiError, invalid_parameter
from st_pipeline.simulator.store import (
    DatasetStore,
    Position,
    Shape,
    StoredRecord,
    dumps,
    join_json,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 5000
MAX_IDS = 50

_START: Position = (-(1 << 62), -1)  # before every record
_TOKEN_PREFIX = "v1."
_LOOKS_LIKE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Date filters of list endpoints: parameter → (record attribute, inclusive lower bound?).
# An upper bound ("…Before") is always exclusive.
_DATE_FILTERS: dict[str, tuple[str, str]] = {
    "modifiedOnOrAfter": ("modified", "ge"),
    "modifiedAfter": ("modified", "gt"),
    "modifiedBefore": ("modified", "lt"),
    "createdOnOrAfter": ("created", "ge"),
    "createdAfter": ("created", "gt"),
    "createdBefore": ("created", "lt"),
}
_SORT_FIELDS = {"id": "id", "modifiedon": "modified", "createdon": "created"}


class Query:
    """Query parameters, matched case-insensitively (as ASP.NET does)."""

    def __init__(self, raw: str) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in parse_qsl(raw, keep_blank_values=True):
            self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> str | None:
        """The last value given for ``name``."""
        values = self._values.get(name.lower())
        return values[-1] if values else None

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name.lower(), [])


def _declared(endpoint: Endpoint) -> set[str]:
    return {name.lower() for name in endpoint.query_params}


def encode_position(position: Position) -> str:
    """An opaque continuation token for a place in an export feed."""
    raw = f"{position[0]}|{position[1]}".encode()
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(token: str) -> Position:
    """The place named by a continuation token; ``ValueError`` if it is not one of ours."""
    if not token.startswith(_TOKEN_PREFIX):
        raise ValueError("not a continuation token")
    payload = token[len(_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        ticks, record_id = raw.split("|")
        return int(ticks), int(record_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("malformed continuation token") from exc


def _export_start(value: str | None) -> Position:
    if value is None or value.strip() == "":
        return _START
    if _LOOKS_LIKE_DATE.match(value.strip()):
        try:
            return parse_ticks(value), -1  # records modified on or after this instant
        except ValueError:
            pass
    else:
        try:
            return decode_position(value.strip())
        except ValueError:
            pass
    raise ApiError(
        400,
        "Invalid 'from' value: use a continuation token returned in 'continueFrom' or a date such as 2020-01-01.",
        {"from": ["The value is neither a continuation token nor a date."]},
    )


def _active_filter(query: Query, declared: set[str], default: bool | None) -> bool | None:
    """``active`` (True|False|Any) or accounting's ``activeState``; ``None`` means all rows."""
    if "activestate" in declared:
        value = query.get("activeState")
        states = {"activeonly": True, "inactiveonly": False, "all": None}
        if value is None or value == "":
            return True
        if value.lower() not in states:
            raise invalid_parameter("activeState", "Allowed values: ActiveOnly, InactiveOnly, All.")
        return states[value.lower()]
    if "active" in declared:
        value = query.get("active")
        if value is None or value == "":
            return default
        states = {"true": True, "false": False, "any": None}
        if value.lower() not in states:
            raise invalid_parameter("active", "Allowed values: True, False, Any.")
        return states[value.lower()]
    return None


def int_param(query: Query, name: str, default: int, minimum: int, maximum: int | None) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid_parameter(name, f"The value '{value}' is not a valid integer.") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise invalid_parameter(name, f"The field {name} must be {bound}.")
    return number


def bool_param(query: Query, name: str) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return False
    if value.lower() not in ("true", "false"):
        raise invalid_parameter(name, f"The value '{value}' is not a valid boolean.")
    return value.lower() == "true"


def _ids_param(query: Query, declared: set[str]) -> frozenset[int] | None:
    if "ids" not in declared:
        return None
    # Comma-separated (``ids=1,2``), or repeated (``ids=1&ids=2``) where the spec has an array.
    parts = [p.strip() for value in query.get_all("ids") for p in value.split(",") if p.strip()]
    if not parts:
        return None
    if len(parts) > MAX_IDS:
        raise invalid_parameter("ids", f"At most {MAX_IDS} ids can be requested at once.")
    try:
        return frozenset(int(part) for part in parts)
    except ValueError:
        raise invalid_parameter("ids", "Ids must be a comma-separated list of integers.") from None


@dataclass(frozen=True)
class _Filter:
    """A list query's row filter; hashable, so equal queries share one cached result."""

    active: bool | None
    bounds: tuple[tuple[str, str, int], ...]  # (attribute, operator, ticks)
    ids: frozenset[int] | None

    def predicate(self) -> Callable[[StoredRecord], bool] | None:
        if self.active is None and not self.bounds and self.ids is None:
            return None
        active, bounds, ids = self.active, self.bounds, self.ids

        def keep(record: StoredRecord) -> bool:
            if active is not None and record.active is not active:
                return False
            if ids is not None and record.id not in ids:
                return False
            for attribute, operator, ticks in bounds:
                value = record.modified if attribute == "modified" else record.created
                if operator == "ge" and value < ticks:
                    return False
                if operator == "gt" and value <= ticks:
                    return False
                if operator == "lt" and value >= ticks:
                    return False
            return True

        return keep


def _list_filter(query: Query, endpoint: Endpoint, default_active: bool | None) -> _Filter:
    declared = _declared(endpoint)
    bounds = []
    for name, (attribute, operator) in _DATE_FILTERS.items():
        if name.lower() not in declared:
            continue
        value = query.get(name)
        if value is None or value == "":
            continue
        try:
            bounds.append((attribute, operator, parse_ticks(value)))
        except ValueError:
            message = f"The value '{value}' is not a valid date-time."
            raise invalid_parameter(name, message) from None
    return _Filter(
        active=_active_filter(query, declared, default_active),
        bounds=tuple(bounds),
        ids=_ids_param(query, declared),
    )


def _order(query: Query, endpoint: Endpoint) -> tuple[str, bool]:
    """``sort=+ModifiedOn`` / ``-Id``, or ``orderBy`` + ``orderByDirection``; default by id."""
    declared = _declared(endpoint)
    if "sort" in declared and query.get("sort"):
        value = query.get("sort") or ""
        descending = value.startswith("-")
        field = value.lstrip("+- ").lower()
        return _SORT_FIELDS.get(field, "id"), descending and field in _SORT_FIELDS
    if "orderby" in declared and query.get("orderBy"):
        field = (query.get("orderBy") or "").lower()
        descending = (query.get("orderByDirection") or "").lower() in ("desc", "descending")
        return _SORT_FIELDS.get(field, "id"), descending and field in _SORT_FIELDS
    return "id", False


def export_body(
    store: DatasetStore,
    endpoint: Endpoint,
    shape: Shape | None,
    query: Query,
    batch_size: int,
    *,
    repeat_cursor: bool = False,
    same_page: bool = False,
) -> bytes:
    """``{"hasMore", "continueFrom", "data"}``: the next batch of the feed after ``from``.

    With ``repeat_cursor`` a request with a ``from`` value is answered as if it had none (the
    feed's first batch), but with ``hasMore`` true and that same ``from`` value as
    ``continueFrom``: a cursor that never moves although every answer carries records. With
    ``same_page`` such a request gets the first batch and ``hasMore`` true too, but a new
    ``continueFrom`` every time: a cursor that moves while the records do not.
    """
    raw_from = query.get("from")
    after = _export_start(raw_from)
    # Two export feeds declare an ``active`` filter; by default every feed returns all rows.
    active = _active_filter(query, _declared(endpoint) & {"active"}, None)
    repeat = (repeat_cursor or same_page) and raw_from is not None and raw_from.strip() != ""
    start = _START if repeat else after
    records, position, has_more = store.export_batch(start, batch_size, active)
    if repeat and not repeat_cursor:
        cursor = f'"loop-{hashlib.sha256(str(raw_from).encode()).hexdigest()[:16]}"'
    else:
        cursor = dumps(raw_from) if repeat else f'"{encode_position(position)}"'
    head = f'{{"hasMore":{"true" if has_more or repeat else "false"},"continueFrom":{cursor},"data":['
    return b"".join((head.encode(), join_json(records, shape), b"]}"))


def list_body(
    store: DatasetStore,
    endpoint: Endpoint,
    shape: Shape | None,
    query: Query,
    *,
    endless_has_more: bool = False,
    same_page: bool = False,
    short_pages: bool = False,
) -> bytes:
    """``{"page", "pageSize", "hasMore", "totalCount", "data"}`` for one page of a list.

    With ``endless_has_more`` every page says ``hasMore`` true, and a page past the end carries
    the records of the last real page again (``totalCount`` stays the true count). With
    ``same_page`` every page is the first page and says ``hasMore`` true; with ``short_pages``
    page *n* holds just the *n*-th record (round the records again) and says ``hasMore`` true.
    """
    maximum = min(int(endpoint.page_size_max or MAX_PAGE_SIZE), MAX_PAGE_SIZE)
    page = int_param(query, "page", 1, 1, None)
    page_size = int_param(query, "pageSize", DEFAULT_PAGE_SIZE, 1, maximum)
    include_total = bool_param(query, "includeTotal")
    row_filter = _list_filter(query, endpoint, default_active=True)
    order, descending = _order(query, endpoint)
    matching = store.select(order, descending, row_filter, row_filter.predicate())
    start = 0 if same_page else (page - 1) * page_size
    records = matching[start : start + page_size]
    has_more = start + page_size < len(matching) or same_page
    if short_pages:
        records = [matching[(page - 1) % len(matching)]] if matching else []
        has_more = True
    if endless_has_more:
        has_more = True
        if not records and matching:
            last_start = (len(matching) - 1) // page_size * page_size
            records = matching[last_start : last_start + page_size]
    total = str(len(matching)) if include_total else "null"
    head = (
        f'{{"page":{page},"pageSize":{page_size},"hasMore":{"true" if has_more else "false"},'
        f'"totalCount":{total},"data":['
    )
    return b"".join((head.encode(), join_json(records, shape), b"]}"))


def lookup_body(store: DatasetStore, endpoint: Endpoint, shape: Shape | None, query: Query) -> bytes:
    """A JSON array of every (matching) record, for unpaged lookup endpoints."""
    row_filter = _list_filter(query, endpoint, default_active=True)
    records = store.select("id", False, row_filter, row_filter.predicate())
    return b"".join((b"[", join_json(records, shape), b"]"))
