"""Where the official ServiceTitan specs are, for the tests that compare the catalogue with them.

``ST_PIPELINE_SPEC_DIR`` overrides the default (``../shared/servicetitan-specs`` beside the
checkout). Without the specs those tests skip on a workstation but fail in CI (``CI`` set), where a
missing checkout of the specs must not pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from st_pipeline.servicetitan import spec_import


def spec_dir() -> Path:
    """The specs' directory: ``ST_PIPELINE_SPEC_DIR``, else the generator's default."""
    override = os.environ.get("ST_PIPELINE_SPEC_DIR", "").strip()
    return Path(override) if override else spec_import.DEFAULT_SPEC_DIR


def in_ci() -> bool:
    """Whether the ``CI`` variable is set (to anything but an empty, ``0`` or ``false`` value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_spec_dir() -> Path:
    """The specs' directory; skips the test when it is missing, or fails it when running in CI."""
    path = spec_dir()
    if path.is_dir():
        return path
    message = f"ServiceTitan specs not found at {path} (set ST_PIPELINE_SPEC_DIR, or check out ../shared)"
    if in_ci():
        pytest.fail(f"{message}; CI must run the spec tests, not skip them", pytrace=False)
    pytest.skip(message)
