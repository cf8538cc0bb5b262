"""Optuna storages from URLs: SQLite (default), journal files and PostgreSQL.

sqlite:///runs/studies.db        relative path (three slashes), sqlite:////abs/path.db absolute
journal:///runs/studies.log      Optuna's JournalFileBackend, the same slash convention
postgresql://user:pw@host/db     many machines
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

SCHEMES = ("sqlite", "journal", "postgresql")
# A worker that stops beating for GRACE seconds is dead: its trial is failed and retried.
HEARTBEAT_S = 10
GRACE_S = 30
MAX_RETRY = 3


class StorageError(ValueError):
    """A storage URL that cannot be opened, with the reason."""


def storage_path(url: str) -> Path | None:
    """The file behind a sqlite:/// or journal:/// URL (None for a server URL)."""
    for scheme in ("sqlite", "journal"):
        prefix = f"{scheme}:///"
        if url.startswith(prefix):
            return Path(url[len(prefix) :])
    return None


def check_url(url: str) -> None:
    scheme = url.partition("://")[0].split("+")[0]
    if scheme not in SCHEMES or "://" not in url:
        raise StorageError(
            f"storage {url!r} is not supported; use sqlite:///path.db, journal:///path.log "
            "or postgresql://user:password@host/database"
        )
    if scheme in ("sqlite", "journal") and not str(storage_path(url) or ""):
        raise StorageError(f"storage {url!r} names no file; e.g. {scheme}:///runs/studies.db")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (creating the file's folder when needed) the storage behind `url`."""
    check_url(url)
    path = storage_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage {url!r}: cannot create {path.parent}: {exc}") from exc
    if url.startswith("journal:"):
        assert path is not None
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {}
    if url.startswith("sqlite:"):
        # Wait for a writer instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 120}}
    try:
        with (
            warnings.catch_warnings()
        ):  # heartbeats are "experimental" in Optuna 5; we rely on them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRY
                ),
            )
    except Exception as exc:  # sqlalchemy/driver errors: one line for the user
        raise StorageError(f"storage {url!r} cannot be opened: {exc}") from exc
