"""Readers for the datasets' published file formats: gzipped IDX (MNIST, Fashion-MNIST) and
the CIFAR-10 binary version (fixed 3073-byte records; its python version is a pickle, and no
pickle from a downloaded file is ever loaded here)."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np

IDX_UBYTE = 0x08
CIFAR_SIDE = 32
CIFAR_RECORD = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE  # a label byte, then R, G and B planes
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN = tuple(f"{CIFAR_DIR}/data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = (f"{CIFAR_DIR}/test_batch.bin",)


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes as an array of its declared shape."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a gzipped IDX file: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, but it holds {body.size} values")
    return body.reshape(shape)


def read_cifar_binary(archive: Path, members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 3, 32, 32)` uint8 and labels `(N,)` from `members` of the binary tarball.

    The members are read straight from the archive: nothing is extracted to disk.
    """
    images, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for name in members:
            try:
                member = tar.extractfile(name)
            except KeyError:
                raise ValueError(f"{archive}: {name} is missing; is it cifar-10-binary?") from None
            if member is None:
                raise ValueError(f"{archive}: {name} is not a regular file")
            raw = np.frombuffer(member.read(), dtype=np.uint8)
            if raw.size % CIFAR_RECORD:
                raise ValueError(f"{archive}: {name} is not a whole number of CIFAR records")
            records = raw.reshape(-1, CIFAR_RECORD)
            labels.append(records[:, 0])
            images.append(records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE))
    return np.concatenate(images), np.concatenate(labels)
