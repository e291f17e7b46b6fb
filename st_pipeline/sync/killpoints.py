"""Crash points for the crash-safety tests.

``ST_PIPELINE_KILL_AT=<point>:<n>`` makes the process kill itself with SIGKILL the n-th time the
sync reaches ``<point>`` — a real, uncatchable crash at an exact place. With
``ST_PIPELINE_KILL_ONCE_FILE=<path>`` only a process that finds that file (and removes it) dies:
one crash among many runs. Unset (always, outside those tests) ``reached`` is one comparison.

Points: ``page_received`` (a page arrived, nothing written), ``rows_written`` (rows upserted, the
transaction still open), ``cursor_written`` (cursor saved, not committed), ``page_committed``
(just after the commit), ``dataset_finished`` (a dataset's sync-log row closed).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

_setting = os.environ.get("ST_PIPELINE_KILL_AT", "")
_once_file = os.environ.get("ST_PIPELINE_KILL_ONCE_FILE")
_point, _, _nth = _setting.partition(":")
_target = (_point, int(_nth or "1")) if _point else None
_counts: Counter[str] = Counter()
_lock = threading.Lock()


def reached(point: str) -> None:
    if _target is None or point != _target[0]:
        return
    with _lock:
        _counts[point] += 1
        if _counts[point] == _target[1]:
            if _once_file is not None:
                try:
                    os.remove(_once_file)
                except FileNotFoundError:
                    return  # another process took the one crash
            os.kill(os.getpid(), signal.SIGKILL)
