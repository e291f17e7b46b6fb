"""What the HTTP layer sends back for one API request."""

from __future__ import annotations

from dataclasses import dataclass, field

JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"


@dataclass
class Reply:
    """A response to send: status, body and extra headers, and how to misbehave while sending.

    ``delay_s`` is waited (in the request's thread) before answering, on top of the configured
    latency; ``drop`` closes the connection without answering at all. With
    ``drip_bytes_per_s`` the status line and headers (with the right ``Content-Length``) go
    out at once, and then the body at that rate, in chunks of ``max(1, int(rate / 10))``
    bytes; the drip stops when the client disconnects or the simulator stops.
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON
    delay_s: float = 0.0
    drop: bool = False
    drip_bytes_per_s: float | None = None
