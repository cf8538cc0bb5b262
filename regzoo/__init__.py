"""regzoo: a PyTorch Lightning model zoo and regularization study package.

    >>> from regzoo import create_model, create_datamodule
    >>> dm = create_datamodule("digits", batch_size=64, normalize="standard")
    >>> model = create_model("cnn", input_shape=dm.input_shape, num_classes=dm.num_classes)

The packages: `regzoo.zoo` (models), `regzoo.datamodules` (data), `regzoo.studies` (Optuna
studies, reports, the lecture's experiments). The command line is `regzoo` (`python -m regzoo`).
The names below load their package (torch, Lightning) when first used, not on `import regzoo`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from regzoo._lazy import lazy_exports

__version__ = "0.3.0"

_EXPORTS = {
    "create_datamodule": "regzoo.datamodules",
    "list_datamodules": "regzoo.datamodules",
    "create_model": "regzoo.zoo",
    "list_models": "regzoo.zoo",
    "load_model": "regzoo.zoo",
}

__all__ = [
    "__version__",
    "create_datamodule",
    "create_model",
    "list_datamodules",
    "list_models",
    "load_model",
]

if TYPE_CHECKING:
    from regzoo.datamodules import create_datamodule, list_datamodules
    from regzoo.zoo import create_model, list_models, load_model


__getattr__ = lazy_exports(__name__, _EXPORTS)
