"""A sync observer that kills its process: the crash tests' real, uncatchable crash at an exact point.

``KillAt(SyncPoint.PAGE_COMMITTED, 2)`` sends the process SIGKILL the second time its sync commits
a page. With ``once_file``, only a process that finds that file (and removes it) dies: one crash
among many runs, e.g. of a daemon's run workers.

In a Dagster process it comes from the environment, ``ST_PIPELINE_TEST_KILL_AT=<point>:<n>`` (and
``ST_PIPELINE_TEST_KILL_ONCE_FILE``), read by the test code location ``st_pipeline_tests.killing_location``
— never by the pipeline itself.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.sync.observer import SyncPoint

KILL_AT_VARIABLE = "ST_PIPELINE_TEST_KILL_AT"
KILL_ONCE_FILE_VARIABLE = "ST_PIPELINE_TEST_KILL_ONCE_FILE"


class KillAt:
    """SIGKILL this process the ``nth`` time its sync reaches ``point``."""

    def __init__(self, point: SyncPoint, nth: int = 1, once_file: Path | None = None) -> None:
        self.point, self.nth, self.once_file = point, nth, once_file
        self._counts: Counter[SyncPoint] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str, once_file: Path | None = None) -> KillAt:
        """``"<point>:<n>"`` (``n`` defaults to 1), e.g. ``"rows_written:14"``."""
        point, _, nth = spec.partition(":")
        return cls(SyncPoint(point), int(nth or "1"), once_file)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> KillAt | None:
        spec = environ.get(KILL_AT_VARIABLE, "")
        once_file = environ.get(KILL_ONCE_FILE_VARIABLE)
        return cls.parse(spec, Path(once_file) if once_file else None) if spec else None

    def reached(self, point: SyncPoint, dataset: Dataset) -> None:
        if point != self.point:
            return
        with self._lock:
            self._counts[point] += 1
            if self._counts[point] != self.nth:
                return
            if self.once_file is not None:
                try:
                    self.once_file.unlink()
                except FileNotFoundError:
                    return  # another process took the one crash
            os.kill(os.getpid(), signal.SIGKILL)
