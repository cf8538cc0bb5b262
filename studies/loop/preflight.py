"""Before the first trial: the results folder must be writable and its disk not nearly full.

A study that finds out at its first checkpoint fails trial after trial instead; checked here,
an unwritable `runs/` (a file in its place, a read-only mount) or a full disk is one line and
exit code 2, with nothing written: no study in the storage, no folder left behind.

REGZOO_MIN_FREE_MB sets the free space a study needs (default 100 MB: checkpoints, curves and
offline W&B runs of a few hundred small trials).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from regzoo.studies.executor.storage import StorageError

MIN_FREE_ENV = "REGZOO_MIN_FREE_MB"
MIN_FREE_MB = 100
MB = 2**20


class RunsDirError(StorageError):
    """The results folder cannot take a study's files: one line for the user."""


def check_runs_dir(runs_dir: str | Path) -> None:
    """Create `runs_dir` if needed and check that it is writable with enough free space.

    Raises:
        RunsDirError: naming the folder and the reason; a folder this check created is removed.
    """
    path = Path(runs_dir)
    need = min_free_mb()
    created = _first_missing(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        free = shutil.disk_usage(path).free
    except OSError as exc:
        _remove_empty(path, created)
        reason = exc.strerror or type(exc).__name__
        raise RunsDirError(f"runs_dir {str(path)!r} is not a writable folder: {reason}") from None
    if free < need * MB:
        _remove_empty(path, created)
        raise RunsDirError(
            f"runs_dir {str(path)!r}: {free // MB} MB free on its disk, less than the {need} MB "
            f"a study needs; free some space, choose another runs_dir, or lower {MIN_FREE_ENV}"
        )


def min_free_mb() -> int:
    text = os.environ.get(MIN_FREE_ENV)
    if text is None:
        return MIN_FREE_MB
    if not text.strip().isdigit():
        raise RunsDirError(
            f"{MIN_FREE_ENV}={text!r} is invalid; allowed: a whole number of megabytes >= 0"
        )
    return int(text)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: it all exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing = folder
    return missing


def _remove_empty(path: Path, created: Path | None) -> None:
    """Remove the folders from `path` up to `created`, the ones this check made (still empty)."""
    if created is None:
        return
    for folder in (path, *path.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return
