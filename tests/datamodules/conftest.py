"""Fixtures for the datamodule tests: small files in the real published formats, written here
byte by byte (not with the package's readers' help), and a factory that builds any registered
datamodule offline."""

from __future__ import annotations

import csv
import gzip
import io
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_iris

from regzoo.datamodules import ArrayDataModule, create_datamodule

IDX_FILES = {
    "train-images-idx3-ubyte.gz": "x",
    "train-labels-idx1-ubyte.gz": "y",
    "t10k-images-idx3-ubyte.gz": "x_test",
    "t10k-labels-idx1-ubyte.gz": "y_test",
}
N_TRAIN, N_TEST, CLASSES = 100, 30, 10


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, type 0x08 (unsigned byte), the rank, big-endian int32 dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def idx_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "y": np.arange(N_TRAIN, dtype=np.uint8) % CLASSES,
        "x_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "y_test": np.arange(N_TEST, dtype=np.uint8) % CLASSES,
    }


def write_idx_set(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, key in IDX_FILES.items():
        write_idx(folder / name, arrays[key])


def cifar_records(n: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n CIFAR binary records: a label byte, then 1024 red, 1024 green, 1024 blue bytes."""
    labels = (np.arange(n) % CLASSES).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    blob = b"".join(
        bytes([label]) + image.tobytes() for label, image in zip(labels, images, strict=True)
    )
    return blob, images, labels


def write_cifar(archive: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A cifar-10-binary.tar.gz of 5 × 20 training and 30 test records."""
    rng = np.random.default_rng(seed)
    archive.parent.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[np.ndarray]] = {"x": [], "y": []}
    with tarfile.open(archive, "w:gz") as tar:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for name in names:
            blob, images, labels = cifar_records(N_TEST if name == "test_batch.bin" else 20, rng)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            key = "_test" if name == "test_batch.bin" else ""
            parts.setdefault("x" + key, []).append(images)
            parts.setdefault("y" + key, []).append(labels)
    return {key: np.concatenate(value) for key, value in parts.items()}


def write_image_folder(root: Path, *, per_class: int = 12, classes: int = 3) -> None:
    """PNG images of different sizes, class c filled with grey level 60·c + noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (20 + i, 12 + 2 * i)
            pixels = np.full((size[1], size[0], 3), 60 * c, np.uint8) + rng.integers(0, 5, 1)[0]
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")


def write_iris(path: Path) -> None:
    """scikit-learn's iris as a CSV file: four measurement columns, the species by name."""
    iris = load_iris()
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for x, y in zip(iris.data, iris.target, strict=True):
            writer.writerow([*x, iris.target_names[y]])


@pytest.fixture(scope="session")
def offline_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding every dataset's files (tiny versions of the downloadable ones)."""
    root = tmp_path_factory.mktemp("data")
    write_idx_set(root / "mnist", idx_arrays(0))
    write_idx_set(root / "fashion_mnist", idx_arrays(1))
    write_cifar(root / "cifar10" / "cifar-10-binary.tar.gz")
    write_image_folder(root / "images")
    write_iris(root / "iris.csv")
    return root


@pytest.fixture(scope="session")
def make_dm(offline_data: Path) -> Callable[..., ArrayDataModule]:
    """`make_dm(name, **options)`: any registered datamodule, with data that needs no network."""

    def make(name: str, **options: Any) -> ArrayDataModule:
        folder = offline_data / "images" if name == "image_folder" else offline_data
        options.setdefault("data_dir", folder)
        if name == "image_folder":
            options.setdefault("image_size", 16)
        if name == "csv":
            options.setdefault("path", offline_data / "iris.csv")
            options.setdefault("target", "species")
        return create_datamodule(name, **options)

    return make
