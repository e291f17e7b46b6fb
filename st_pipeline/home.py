"""Local state on disk, kept private to the user who runs st_pipeline.

The home directory (``ST_PIPELINE_HOME``) holds the default SQLite warehouse and registry, the
demo's key file and Dagster instance. Unset, it is the project's own ``.st_pipeline`` directory
(the one ``make demo`` fills) when the current directory is inside that project, else
``~/.st_pipeline``. Directories st_pipeline creates are ``0700`` and files ``0600``, created with
those modes (never loosened and tightened after).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

LOCAL_STATE_DIR = ".st_pipeline"
KEY_FILE_NAME = "secret.key"
DAGSTER_HOME_NAME = "dagster"

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


def find_project_home(start: Path) -> Path | None:
    """The nearest ``.st_pipeline`` directory in ``start`` or one of its parents, if this user owns it.

    Like git finding its repository: a command run anywhere inside the project sees the state
    ``make demo`` created there. A directory of another user (or a symlink) is passed over, so a
    shared parent directory cannot hand anyone's commands a state directory of its choosing.
    """
    for directory in (start, *start.parents):
        try:
            info = (directory / LOCAL_STATE_DIR).lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            return directory / LOCAL_STATE_DIR
    return None


def default_home() -> Path:
    """``ST_PIPELINE_HOME`` when it is not set: the project's ``.st_pipeline``, else ``~/.st_pipeline``."""
    try:
        found = find_project_home(Path.cwd())
    except OSError:  # the current directory was deleted
        found = None
    return found or Path("~", LOCAL_STATE_DIR).expanduser()
