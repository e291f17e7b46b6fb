"""The channel interface, and helpers channels share to describe targets without secrets."""

from __future__ import annotations

from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from st_pipeline.alerts.model import AlertMessage


@runtime_checkable
class Channel(Protocol):
    """Somewhere alerts go. ``send`` raises ``AlertDeliveryError`` when delivery fails."""

    @property
    def name(self) -> str:
        """A short label safe to show and log (never a secret path or password)."""
        ...

    def send(self, message: AlertMessage) -> None:
        """Deliver one message, or raise ``AlertDeliveryError``."""
        ...


def public_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what may be shown of it (paths of webhooks are secrets)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}"


def is_http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
