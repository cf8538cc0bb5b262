"""Downloads into `data_dir`: checksum-verified, written atomically, never half-present.

Only `prepare_data` downloads (Lightning runs it on one process per node); `load` reads the files
through `downloaded`, which says what to do when one is missing instead of fetching it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or its checksum did not match; nothing was left at the destination."""


def check_mirror(mirror: object) -> None:
    """A dataset's `mirror` option: None (the usual URL) or a base URL."""
    if mirror is not None and (not isinstance(mirror, str) or not mirror.strip()):
        raise ValueError(f"mirror={mirror!r} is invalid; allowed: None or a base URL")


def downloaded(path: Path) -> Path:
    """`path`, a file that `prepare_data()` downloads; a clear error if it is not there yet."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: call prepare_data() first to download it (a Trainer does), "
            "or place the file there yourself"
        )
    return path


def fetch(url: str, dest: Path, *, md5: str) -> Path:
    """Download `url` to `dest` unless `dest` exists; verify its MD5 before keeping it.

    The bytes go to a temporary file next to `dest` and are renamed into place only once the
    checksum matches, so an interrupted or corrupted download never looks like a finished one.
    """
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            raise DownloadError(
                f"could not download {url}: {exc}; place the file at {dest} yourself "
                "or pass mirror= with another base URL"
            ) from exc
        if digest.hexdigest() != md5:
            raise DownloadError(
                f"checksum mismatch for {url}: md5 {digest.hexdigest()}, expected {md5}; "
                f"the download was discarded and nothing was written to {dest}"
            )
        shutil.move(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest
