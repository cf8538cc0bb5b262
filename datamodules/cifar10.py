"""CIFAR-10: 32×32 colour images, 10 classes, official 50000/10000 split.

Read from the binary version (`cifar-10-binary.tar.gz`, fixed 3073-byte records), straight out
of the archive: the python version is a pickle, and a downloaded pickle is never unpickled.
Downloaded into `data_dir/cifar10/` by `prepare_data()` when missing and checked against the
published MD5. `input_shape` and `num_classes` are known without touching `data_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from regzoo.datamodules._download import check_mirror, downloaded, fetch
from regzoo.datamodules._formats import CIFAR_TEST, CIFAR_TRAIN, read_cifar_binary
from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.base import ArrayDataModule, Arrays

URL = "https://www.cs.toronto.edu/~kriz"
ARCHIVE = "cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


@register_datamodule("cifar10")
class Cifar10(ArrayDataModule):
    """CIFAR-10 as (3, 32, 32) images scaled to [0, 1].

    Args:
        mirror: Base URL to download `cifar-10-binary.tar.gz` from instead of Toronto's.
    """

    nominal_shape = (3, 32, 32)
    raw_range = (0.0, 1.0)
    names = (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    nominal_classes = 10

    def __init__(self, *, mirror: str | None = None, **options: Any) -> None:
        check_mirror(mirror)
        self.mirror = mirror
        super().__init__(**options)

    @property
    def archive(self) -> Path:
        return self.data_dir / "cifar10" / ARCHIVE

    def download(self) -> None:
        fetch(f"{(self.mirror or URL).rstrip('/')}/{ARCHIVE}", self.archive, md5=MD5)

    def load(self) -> Arrays:
        x, y = read_cifar_binary(downloaded(self.archive), CIFAR_TRAIN)
        x_test, y_test = read_cifar_binary(self.archive, CIFAR_TEST)
        scale = np.float32(1 / 255)
        return Arrays(x=x * scale, y=y, x_test=x_test * scale, y_test=y_test)
