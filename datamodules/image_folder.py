"""`image_folder`: a user's images, one sub-folder per class, resized to one size.

    data_dir/cat/001.png, data_dir/dog/xyz.jpg, ...            (fixed stratified test split)
    data_dir/train/cat/..., data_dir/test/cat/...              (an official test split)

Every image is converted to RGB (or grey) and resized to `image_size` with bilinear
resampling: the course's size normalization, since a network needs one input shape. So
`input_shape` comes from `image_size` and `num_classes` from a listing of the class folders,
without reading an image; nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.base import ArrayDataModule, Arrays

MAX_SIDE = 4096  # a side beyond which a decoded image set is gigabytes per hundred images
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@register_datamodule("image_folder")
class ImageFolder(ArrayDataModule):
    """Class-per-folder images under `data_dir`, as (3 or 1, H, W) arrays in [0, 1].

    Args:
        image_size: Side of the square every image is resized to, or (height, width).
        grayscale: Read images as one grey channel instead of RGB.
    """

    def __init__(
        self, *, image_size: int | tuple[int, int] = 32, grayscale: bool = False, **options: Any
    ) -> None:
        self.size = _check_size(image_size)
        if not isinstance(grayscale, bool):
            raise ValueError(f"grayscale={grayscale!r} is invalid; allowed: True or False")
        self.image_size, self.grayscale = image_size, grayscale
        self.nominal_shape = (1 if grayscale else 3, *self.size)
        super().__init__(**options)
        classes = self.nominal_num_classes()
        if classes is not None:  # read by a study config's dry check before anything is loaded
            self.nominal_classes = classes

    raw_range = (0.0, 1.0)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class folders' names, in label order (a listing, no image read)."""
        return tuple(_classes(self._train_root()))

    def nominal_num_classes(self) -> int | None:
        """One class per sub-folder, from a listing of `data_dir`; None below 2 folders, so that
        reading `num_classes` loads and says what is missing."""
        classes = len(_classes(self._train_root()))
        return classes if classes >= 2 else None

    def _train_root(self) -> Path:
        split_root = self.data_dir / "train"
        return (
            split_root
            if (self.data_dir / "test").is_dir() and split_root.is_dir()
            else self.data_dir
        )

    def load(self) -> Arrays:
        root = self._train_root()
        classes = _classes(root)
        if len(classes) < 2:
            raise ValueError(
                f"data_dir={str(self.data_dir)!r} needs one sub-folder of images per class "
                f"(at least 2); found {len(classes)}"
            )
        x, y = self._read(root, classes)
        if root == self.data_dir:
            return Arrays(x=x, y=y)
        x_test, y_test = self._read(self.data_dir / "test", classes)
        return Arrays(x=x, y=y, x_test=x_test, y_test=y_test)

    def _read(self, root: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, name in enumerate(classes):
            for path in sorted((root / name).iterdir()):
                if path.suffix.lower() in EXTENSIONS:
                    images.append(self._image(path))
                    labels.append(label)
        if not images:
            raise ValueError(f"no images ({', '.join(sorted(EXTENSIONS))}) under {root}")
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    def _image(self, path: Path) -> np.ndarray:
        with Image.open(path) as file:
            img = file.convert("L" if self.grayscale else "RGB")
        img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        pixels = np.asarray(img, dtype=np.float32) / 255  # (H, W) or (H, W, 3)
        return pixels[None] if self.grayscale else pixels.transpose(2, 0, 1)  # -> (C, H, W)


def _classes(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_size(size: Any) -> tuple[int, int]:
    pair = (
        (size, size)
        if isinstance(size, int)
        else tuple(size)
        if isinstance(size, list | tuple)
        else ()
    )
    if len(pair) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and 4 <= s <= MAX_SIDE for s in pair
    ):
        raise ValueError(
            f"image_size={size!r} is invalid; allowed: an integer in [4, {MAX_SIDE}] "
            "or (height, width)"
        )
    return (int(pair[0]), int(pair[1]))
