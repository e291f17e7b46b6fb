"""Errors of the alerting package. Their messages never contain a secret."""

from __future__ import annotations


class AlertError(Exception):
    """Base class of every alerting error."""


class AlertDeliveryError(AlertError):
    """One or more channels could not deliver a message.

    ``failures`` lists ``(channel name, reason)`` pairs; both are safe to log (no webhook path,
    no password, no secret from the alert).
    """

    def __init__(self, message: str, failures: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.failures: list[tuple[str, str]] = list(failures or [])

    @property
    def channel_names(self) -> list[str]:
        """Names of the channels that failed."""
        return [name for name, _ in self.failures]
