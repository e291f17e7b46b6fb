"""The per-report pacer: at most N data requests of one report per window, on a manual clock."""

from __future__ import annotations

import pytest

from st_pipeline.servicetitan.reports import ReportPacer


class ManualClock:
    """A clock that moves only when the pacer sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_sixth_request_in_a_window_waits_for_the_first_to_leave_it() -> None:
    clock = ManualClock()
    pacer = ReportPacer(5, 60.0, margin_s=1.0, clock=clock)
    sent = []
    for _ in range(5):
        assert pacer.acquire(clock.sleep) == 0.0
        sent.append(clock.now)
        clock.now += 2.0  # the pages come back two seconds apart
    assert clock.slept == []
    waited = pacer.acquire(clock.sleep)
    # The first went at 100; the window (60 s) and its margin (1 s) end at 161, it is 110 now.
    assert waited == pytest.approx(51.0) and clock.now == pytest.approx(161.0)
    # Each later one waits for the next of the window's requests to leave it: 102 + 61 = 163.
    pacer.acquire(clock.sleep)
    assert clock.now == pytest.approx(163.0)
    assert sent == [100.0, 102.0, 104.0, 106.0, 108.0]


def test_a_pacer_needs_a_positive_budget() -> None:
    with pytest.raises(ValueError, match="at least 1 request"):
        ReportPacer(0, 60.0)
    with pytest.raises(ValueError, match="positive window"):
        ReportPacer(5, 0.0)
