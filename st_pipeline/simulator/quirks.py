"""Misbehaving answers: how one dataset of one tenant departs from a correct 200 answer.

:class:`Quirks` holds the settings of ``Simulator.misbehave``. Those that change what the feed
says (a stuck or repeating cursor, endless pages, a wrong ``totalCount``) are applied where
the answer is built (``feeds`` and the simulator); those that damage the body itself are
applied here by :func:`damage_body`, on the finished JSON:

* ``invalid_utf8``: the first string value of the first record starts with ``\\xff\\xfe``;
* ``padding_bytes``: an extra ``"padding"`` field of that many bytes;
* ``deep_json_depth``: ``data`` (or a bare array's new first element) nested that many levels
  deep.

Every transformation is iterative (no recursion), so a depth of 10 000 costs nothing special.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from st_pipeline.simulator.store import dumpb

INVALID_UTF8 = b"\xff\xfe"
"""The bytes that ``invalid_utf8`` puts into a JSON string (never valid UTF-8)."""

# Placeholders serialized as ordinary JSON strings, then replaced by bytes JSON cannot produce.
_DEEP_MARK = "\x00st-simulator:deep\x00"
_UTF8_MARK = "\x00st-simulator:utf8\x00"


@dataclass(frozen=True)
class Quirks:
    """How one dataset of one tenant misbehaves (see ``Simulator.misbehave``); all off by
    default."""

    stuck_cursor: bool = False
    total_count_offset: int = 0
    repeat_cursor: bool = False
    endless_has_more: bool = False
    same_page: bool = False
    short_pages: bool = False
    deep_json_depth: int = 0
    padding_bytes: int = 0
    drip_bytes_per_s: float | None = None
    invalid_utf8: bool = False

    def __post_init__(self) -> None:
        if self.deep_json_depth < 0:
            raise ValueError("deep_json_depth must not be negative")
        if self.padding_bytes < 0:
            raise ValueError("padding_bytes must not be negative")
        if self.drip_bytes_per_s is not None and not self.drip_bytes_per_s > 0:
            raise ValueError("drip_bytes_per_s must be positive (or None for no drip)")

    @property
    def damages_body(self) -> bool:
        """Whether :func:`damage_body` has anything to do."""
        return self.invalid_utf8 or self.padding_bytes > 0 or self.deep_json_depth > 0


def damage_body(body: bytes, quirks: Quirks) -> bytes:
    """Apply the body-damaging quirks to a valid JSON answer (an object with ``data``, or a
    bare array of records).

    In this order: ``padding_bytes`` adds the ``"padding"`` field at the top level, or inside
    the first record of a bare array (a ``{"padding": …}`` record if it has none).
    ``deep_json_depth`` replaces ``data`` with arrays nested that many levels deep, or puts
    such an element first in a bare array (before the records). ``invalid_utf8`` then picks
    the first record's first string value (the record's own fields first, then those of its
    nested objects); where there is no such string (no records, a string-less record, or
    ``data`` made deep) it adds one: a top-level ``"invalid"`` field, or a ``{"invalid": …}``
    record at the end of a bare array.
    """
    if not quirks.damages_body:
        return body
    document: Any = json.loads(body)
    if quirks.padding_bytes > 0:
        padding = "x" * quirks.padding_bytes
        if isinstance(document, dict):
            document["padding"] = padding
        elif document and isinstance(document[0], dict):
            document[0]["padding"] = padding
        else:
            document.insert(0, {"padding": padding})
    if quirks.deep_json_depth > 0:
        if isinstance(document, dict):
            document["data"] = _DEEP_MARK
        else:
            document.insert(0, _DEEP_MARK)
    if quirks.invalid_utf8:
        _mark_first_string(document)
    out = dumpb(document)
    if quirks.deep_json_depth > 0:
        depth = quirks.deep_json_depth
        out = out.replace(dumpb(_DEEP_MARK), b"[" * depth + b"]" * depth, 1)
    if quirks.invalid_utf8:
        out = out.replace(dumpb(_UTF8_MARK)[1:-1], INVALID_UTF8, 1)
    return out


def _mark_first_string(document: Any) -> None:
    """Put the invalid-UTF-8 placeholder at the start of the first record's first string."""
    records = document.get("data") if isinstance(document, dict) else document
    first = 1 if isinstance(records, list) and records[:1] == [_DEEP_MARK] else 0
    if isinstance(records, list) and len(records) > first:
        if isinstance(records[first], str):
            records[first] = _UTF8_MARK + records[first][1:]
            return
        pending: deque[Any] = deque([records[first]])
        while pending:  # breadth-first: each container of the record is visited once
            container = pending.popleft()
            if not isinstance(container, (dict, list)):
                continue
            items = container.items() if isinstance(container, dict) else enumerate(container)
            for key, value in list(items):
                if isinstance(value, str):
                    container[key] = _UTF8_MARK + value[1:]
                    return
                if isinstance(value, (dict, list)):
                    pending.append(value)
    if isinstance(document, dict):
        document["invalid"] = _UTF8_MARK
    else:
        document.append({"invalid": _UTF8_MARK})
