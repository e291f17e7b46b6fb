"""Local state on disk, kept private to the user who runs st_pipeline.

The home directory (``ST_PIPELINE_HOME``, default ``~/.st_pipeline``) holds the default SQLite
warehouse and registry, the demo's key file and Dagster instance. Directories st_pipeline creates
are ``0700`` and files ``0600``, created with those modes (never loosened and tightened after).
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents, owner-only; existing directories are left as they are."""
    missing = [parent for parent in (path, *path.parents) if not parent.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE)
    return path


def secure_home(home: Path) -> Path:
    """The home directory, created owner-only, or made owner-only if it was not."""
    ensure_private_dir(home)
    if home.stat().st_mode & 0o077:
        home.chmod(PRIVATE_DIR_MODE)
    return home


def create_private_file(path: Path, content: bytes = b"") -> bool:
    """Create ``path`` with mode 0600 holding ``content``; False (and untouched) if it exists."""
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return True
