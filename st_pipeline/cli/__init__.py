"""The ``st-pipeline`` command: tenants and their keys, their declared reports, warehouse schema and
access, the catalogue, the simulator and the demo.

Every error is one line on standard error saying what went wrong and what to do, with a non-zero
exit status; never a traceback (``st-pipeline --traceback …`` shows one for a bug report) and
never a secret. Every command that changes a tenant writes an audit entry (``tenant history``).
"""

from __future__ import annotations

import os

# Each module adds its commands to ``main``.
from st_pipeline.cli import access, db, declared_reports, endpoints, keys, local, reports, tenants  # noqa: F401
from st_pipeline.cli.app import main

__all__ = ["main", "run"]


def run() -> None:
    """The ``st-pipeline`` console command: what it writes (state, Dagster's files) is private."""
    os.umask(0o077)
    main()
