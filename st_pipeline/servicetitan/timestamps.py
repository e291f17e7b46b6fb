"""ServiceTitan timestamps: ISO-8601 UTC with up to 7 fractional digits (100 ns ticks)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FRACTION = re.compile(r"\.(\d+)")


def parse_timestamp(value: object) -> datetime | None:
    """``"2024-03-05T14:22:07.1234567Z"`` → an aware UTC datetime (microseconds kept, 7th digit dropped).

    ``None`` or an unparseable value gives ``None``; callers keep the original string in the payload.
    """
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value.strip(), count=1)
    text = text.removesuffix("Z").removesuffix("z")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
