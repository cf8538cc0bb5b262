"""MNIST and Fashion-MNIST: 28×28 grey images, 10 classes, official 60000/10000 split.

The four gzipped IDX files are downloaded into `data_dir/<name>/` by `prepare_data()` when
missing, from the usual mirror or from `mirror` (any URL base urllib opens, `file://` included),
and each is checked against its published MD5 before it is kept. `input_shape` and `num_classes`
are known without touching `data_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from regzoo.datamodules._download import check_mirror, downloaded, fetch
from regzoo.datamodules._formats import read_idx
from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.base import ArrayDataModule, Arrays

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class IdxImages(ArrayDataModule):
    """A dataset published as four gzipped IDX files.

    Args:
        mirror: Base URL to download from instead of the dataset's usual one.
    """

    nominal_shape = (1, 28, 28)
    raw_range = (0.0, 1.0)
    nominal_classes = 10
    url: ClassVar[str] = ""
    md5: ClassVar[dict[str, str]] = {}

    def __init__(self, *, mirror: str | None = None, **options: Any) -> None:
        check_mirror(mirror)
        self.mirror = mirror
        super().__init__(**options)

    @property
    def folder(self) -> Path:
        return self.data_dir / self.dataset_name

    def download(self) -> None:
        base = (self.mirror or self.url).rstrip("/")
        for name in (*FILES, *TEST_FILES):
            fetch(f"{base}/{name}", self.folder / name, md5=self.md5[name])

    def load(self) -> Arrays:
        x, y, x_test, y_test = (
            read_idx(downloaded(self.folder / f)) for f in (*FILES, *TEST_FILES)
        )
        for images, labels in ((x, y), (x_test, y_test)):
            if images.ndim != 3 or len(images) != len(labels):
                raise ValueError(
                    f"{self.folder}: images {images.shape} and labels {labels.shape} do not match"
                )
        return Arrays(
            x=_scaled(x),
            y=y.astype(np.int64),
            x_test=_scaled(x_test),
            y_test=y_test.astype(np.int64),
        )


def _scaled(images: np.ndarray) -> np.ndarray:
    return (images[:, None] / np.float32(255)).astype(np.float32)  # (N, H, W) -> (N, 1, H, W)


@register_datamodule("mnist")
class Mnist(IdxImages):
    """MNIST handwritten digits, pixels scaled to [0, 1]."""

    url = "https://ossci-datasets.s3.amazonaws.com/mnist"
    md5: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


@register_datamodule("fashion_mnist")
class FashionMnist(IdxImages):
    """Zalando's Fashion-MNIST clothing images, pixels scaled to [0, 1]."""

    url = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion"
    names = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    md5: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
