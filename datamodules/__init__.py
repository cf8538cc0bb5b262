"""regzoo's datamodules: datasets, preprocessing and augmentation, built by name.

from datamodules import create_datamodule
dm = create_datamodule("digits", batch_size=64, normalize="standard",
                       augment={"rotation": 10, "shift": 0.1}, augment_backend="device")
dm.input_shape, dm.num_classes

Preview augmentation: `python -m datamodules preview digits --set augment.rotation=20`.
"""

# Each import registers its datamodule(s).
from datamodules import (  # noqa: F401
    cifar10,
    digits,
    glyph,
    image_folder,
    mnist,
    mnist1d,
    points,
    wine,
)
from datamodules._augment import AUGMENT_KEYS
from datamodules._download import DownloadError
from datamodules._registry import (
    create_datamodule,
    datamodule_options,
    list_datamodules,
    register_datamodule,
)
from datamodules.base import ArrayDataModule, Arrays

__all__ = [
    "AUGMENT_KEYS",
    "ArrayDataModule",
    "Arrays",
    "DownloadError",
    "create_datamodule",
    "datamodule_options",
    "list_datamodules",
    "register_datamodule",
]
