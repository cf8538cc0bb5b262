"""regzoo's datamodules: datasets, preprocessing and augmentation, built by name.

from regzoo.datamodules import create_datamodule
dm = create_datamodule("digits", batch_size=64, normalize="standard",
                       augment={"rotation": 10, "shift": 0.1}, augment_backend="device")
dm.input_shape, dm.num_classes

A dataset name is a registered name, an entry point of group `regzoo.datamodules`, or a user's
LightningDataModule by import path (`mypkg.data:Shapes`, built by `build_datamodule`).

Preview augmentation: `python -m regzoo.datamodules preview digits --set augment.rotation=20`.
"""

# Each import registers its datamodule(s).
from regzoo.datamodules import (  # noqa: F401
    cifar10,
    digits,
    glyph,
    image_folder,
    mnist,
    mnist1d,
    points,
    table,
    wine,
)
from regzoo.datamodules._augment import AUGMENT_KEYS
from regzoo.datamodules._download import DownloadError
from regzoo.datamodules._registry import (
    build_datamodule,
    create_datamodule,
    datamodule_class,
    datamodule_options,
    datamodule_sources,
    list_datamodules,
    register_datamodule,
)
from regzoo.datamodules._user import (
    batch_size_of,
    check_augment,
    data_facts,
    member_augmenter,
    set_by_study,
    takes_augment,
    train_eval_batches,
)
from regzoo.datamodules.base import ArrayDataModule, Arrays

__all__ = [
    "AUGMENT_KEYS",
    "ArrayDataModule",
    "Arrays",
    "DownloadError",
    "batch_size_of",
    "build_datamodule",
    "check_augment",
    "create_datamodule",
    "data_facts",
    "datamodule_class",
    "datamodule_options",
    "datamodule_sources",
    "list_datamodules",
    "member_augmenter",
    "register_datamodule",
    "set_by_study",
    "takes_augment",
    "train_eval_batches",
]
