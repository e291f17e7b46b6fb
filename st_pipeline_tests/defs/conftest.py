"""Fixtures of the Dagster-layer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from st_pipeline_tests.alerts.conftest import HttpReceiver


@pytest.fixture()
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    """A real local HTTP receiver, configured as the JSON-webhook alert channel."""
    server = HttpReceiver()
    server.start()
    monkeypatch.setenv("ST_PIPELINE_ALERT_WEBHOOK_URL", server.url("/hooks/alerts"))
    yield server
    server.stop()
