"""Simulated time: record timestamps as integer ticks, their wire format, and the token clock.

Timestamps are kept as *ticks* (100 ns units since the Unix epoch, the resolution of .NET's
``DateTime``) so that ordering and filtering are integer comparisons; they are rendered the way
ServiceTitan does, in UTC with seven fractional digits: ``2024-03-05T14:22:07.1234567Z``.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, date, datetime, timedelta

TICKS_PER_SECOND = 10_000_000
TICKS_PER_DAY = 86_400 * TICKS_PER_SECOND

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)

# Generated data lies in the two years before this instant. A fixed date, not the wall clock,
# keeps the data identical from one run to the next.
REFERENCE_END = datetime(2025, 6, 1, tzinfo=UTC)
REFERENCE_END_TICKS = (REFERENCE_END - _EPOCH) // timedelta(microseconds=1) * 10
HISTORY_TICKS = 730 * TICKS_PER_DAY
REFERENCE_START_TICKS = REFERENCE_END_TICKS - HISTORY_TICKS

_day_strings: dict[int, str] = {}
_times_of_day: list[str] | None = None  # "HH:MM:SS" for every second of a day, built on first use


def _build_times_of_day() -> list[str]:
    global _times_of_day
    times = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)]
    _times_of_day = times  # published complete, so other threads never see a partial table
    return times


def day_string(day_number: int) -> str:
    """``YYYY-MM-DD`` of a day counted from 1970-01-01 (memoized: there are few distinct days)."""
    text = _day_strings.get(day_number)
    if text is None:
        text = (_EPOCH_DATE + timedelta(days=day_number)).isoformat()
        _day_strings[day_number] = text
    return text


def format_ticks(ticks: int) -> str:
    """Ticks → ``2024-03-05T14:22:07.1234567Z``."""
    # Called for every timestamp of every generated record, hence the lookup tables.
    times = _times_of_day or _build_times_of_day()
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    day_number, second_of_day = divmod(seconds, 86_400)
    day = _day_strings.get(day_number) or day_string(day_number)
    return f"{day}T{times[second_of_day]}.{fraction:07d}Z"


_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|z|[+-]\d{2}:?\d{2})?"
)


def parse_ticks(text: str) -> int:
    """A date or ISO-8601 date-time (UTC unless an offset is given) → ticks.

    Raises ``ValueError`` for anything else. Fractions beyond seven digits are truncated.
    """
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a date or date-time: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    moment = datetime(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        tzinfo=UTC,
    )
    ticks = (moment - _EPOCH) // timedelta(microseconds=1) * 10
    if fraction:
        ticks += int(fraction[:7].ljust(7, "0"))
    if offset and offset.upper() != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        ticks -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * TICKS_PER_SECOND
    return ticks


class SimClock:
    """Monotonic time plus a manual offset, so tests can move "now" forward without sleeping."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds on the simulator's clock (only differences are meaningful)."""
        with self._lock:
            return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the simulator clock only moves forward")
        with self._lock:
            self._offset += seconds

    def elapsed_ticks(self, since: float) -> int:
        """Ticks elapsed on this clock since ``since`` (a value of :meth:`now`)."""
        return max(0, int((self.now() - since) * TICKS_PER_SECOND))
