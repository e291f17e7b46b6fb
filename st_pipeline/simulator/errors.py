"""Error responses in ServiceTitan's shape (``ApiErrorResponse``, after RFC 7807)."""

from __future__ import annotations

import secrets
from typing import Any

_PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc7231#section-6.5.1",
    401: "https://tools.ietf.org/html/rfc7235#section-3.1",
    403: "https://tools.ietf.org/html/rfc7231#section-6.5.3",
    404: "https://tools.ietf.org/html/rfc7231#section-6.5.4",
    405: "https://tools.ietf.org/html/rfc7231#section-6.5.5",
    409: "https://tools.ietf.org/html/rfc7231#section-6.5.8",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    500: "https://tools.ietf.org/html/rfc7231#section-6.6.1",
    502: "https://tools.ietf.org/html/rfc7231#section-6.6.3",
    503: "https://tools.ietf.org/html/rfc7231#section-6.6.4",
    504: "https://tools.ietf.org/html/rfc7231#section-6.6.5",
}

TITLE_NO_APP_KEY = "Application key not present, check ST-App-Key header value."
TITLE_UNAUTHORIZED = "Unauthorized: the access token is missing, invalid or expired."
TITLE_FORBIDDEN = "Provided authentication is insufficient to grant access"
TITLE_NOT_FOUND = "The requested entity was not found"


class ApiError(Exception):
    """Raised while handling a request; becomes an ``ApiErrorResponse`` body."""

    def __init__(
        self,
        status: int,
        title: str,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return problem(self.status, self.title, self.errors)


def invalid_parameter(name: str, message: str) -> ApiError:
    """A 400 for one bad query parameter."""
    return ApiError(400, "One or more validation errors occurred.", {name: [message]})


def problem(status: int, title: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The error body: ``{type, title, status, traceId, errors, data}``."""
    return {
        "type": _PROBLEM_TYPES.get(status, "about:blank"),
        "title": title,
        "status": status,
        "traceId": secrets.token_hex(16),
        "errors": errors or {},
        "data": {},
    }
