"""regzoo's datamodules: datasets, preprocessing and augmentation, built by name.

from datamodules import create_datamodule
dm = create_datamodule("digits", batch_size=64, normalize="standard")
dm.input_shape, dm.num_classes
"""

from datamodules import digits  # noqa: F401  (registers the datamodule)
from datamodules._registry import (
    create_datamodule,
    datamodule_options,
    list_datamodules,
    register_datamodule,
)
from datamodules.base import ArrayDataModule, Arrays

__all__ = [
    "ArrayDataModule",
    "Arrays",
    "create_datamodule",
    "datamodule_options",
    "list_datamodules",
    "register_datamodule",
]
