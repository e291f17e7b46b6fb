"""What a tenant id, name, client id, client secret and time zone may be, checked before anything is stored.

Every check raises ``InvalidTenantInput`` with one line saying what is wrong and what is expected;
none echoes a secret.
"""

from __future__ import annotations

import functools
import zoneinfo
from importlib import resources

from pydantic import SecretStr

from st_pipeline.tenants.tables import MAX_NAME_LENGTH, MAX_TIME_ZONE_LENGTH

# Tenant ids are stored as signed 64-bit integers; 0 is reserved ("every tenant" in the flags).
MAX_TENANT_ID = 2**63 - 1
MAX_SECRET_LENGTH = 1000


class InvalidTenantInput(ValueError):
    """A tenant id, name or credential that cannot be stored."""


def tenant_id(value: object) -> int:
    """A positive 64-bit integer, from an int or its decimal text."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isascii() or not text.isdigit():
        raise InvalidTenantInput(f"tenant id must be a positive whole number, got {printable(text)[:40]!r}")
    number = int(text)
    if not 0 < number <= MAX_TENANT_ID:
        raise InvalidTenantInput(f"tenant id must be between 1 and {MAX_TENANT_ID}, got {printable(text)[:40]}")
    return number


def tenant_name(value: str) -> str:
    """Non-empty, printable (no control or direction-override characters), at most 200 characters."""
    name = value.strip()
    if not name:
        raise InvalidTenantInput("tenant name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidTenantInput(f"tenant name must be at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    if not name.isprintable():
        raise InvalidTenantInput(
            "tenant name must be printable text: no line breaks, tabs, control or text-direction characters"
        )
    return name


def client_id(value: str) -> str:
    """A ServiceTitan client id: printable ASCII without spaces, at most 200 characters."""
    text = value.strip()
    if not text or len(text) > MAX_NAME_LENGTH or not text.isascii() or not text.isprintable() or " " in text:
        raise InvalidTenantInput(
            f"client id must be 1 to {MAX_NAME_LENGTH} printable ASCII characters without spaces (like cid.abc123)"
        )
    return text


def client_secret(value: str) -> SecretStr:
    """A non-empty secret on one line (surrounding whitespace dropped)."""
    text = value.strip()
    if not text:
        raise InvalidTenantInput("the client secret is empty")
    if len(text) > MAX_SECRET_LENGTH or not text.isprintable():
        raise InvalidTenantInput(
            f"the client secret must be one line of at most {MAX_SECRET_LENGTH} printable characters"
        )
    return SecretStr(text)


TIME_ZONE_EXAMPLE = "America/Los_Angeles"
TIME_ZONE_LIST_COMMAND = "st-pipeline tenant time-zones"
# In the IANA database, but the zone of "no zone configured" ("-00"), not a place's calendar.
_NOT_A_PLACE = frozenset({"Factory"})


@functools.cache
def _iana_zone_names() -> frozenset[str]:
    """Every zone and link name of the IANA database, as the ``tzdata`` package lists them.

    Not ``zoneinfo.available_timezones()``: that lists the files of the system's zone directory,
    which also holds names that are no IANA zone (``localtime``, the host's own setting).
    """
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(listed) - _NOT_A_PLACE


def time_zone_names() -> list[str]:
    """The IANA time zone names ``validate_time_zone`` accepts, sorted."""
    return sorted(_iana_zone_names())


def validate_time_zone(name: str) -> str:
    """An IANA time zone name (``America/Los_Angeles``, ``Europe/Berlin``, ``UTC``), surrounding
    whitespace dropped; ``InvalidTenantInput`` for anything else (``PST``, ``localtime``, a path)."""
    text = name.strip()
    if text in _iana_zone_names() and len(text) <= MAX_TIME_ZONE_LENGTH:
        try:
            zoneinfo.ZoneInfo(text)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise InvalidTenantInput(
                f"time zone {text!r} is an IANA name but its data cannot be loaded ({exc}); reinstall the "
                "tzdata package"
            ) from None
        return text
    shown = printable(text)[:70]
    got = f"got {shown!r}" if text else "got an empty value"
    same_letters = [known for known in _iana_zone_names() if known.casefold() == text.casefold()]
    hint = f" (did you mean {same_letters[0]}?)" if same_letters else ""
    raise InvalidTenantInput(
        f"time zone must be an IANA time zone name such as {TIME_ZONE_EXAMPLE}, Europe/Berlin or UTC, "
        f"{got}{hint}; `{TIME_ZONE_LIST_COMMAND} [TEXT]` lists them"
    )


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: anything not printable shown as an escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
