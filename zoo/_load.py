"""`load_model`: any zoo model back from a checkpoint file or a saved model folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from regzoo._checks import one_line
from regzoo.zoo._registry import check_trusted, create_model
from regzoo.zoo.classifier import Classifier
from regzoo.zoo.hub import from_pretrained


def load_model(
    path: str | Path, *, map_location: str | torch.device = "cpu", trust_code: bool = False
) -> Classifier:
    """Rebuild any zoo model from a Lightning checkpoint or a saved model folder
    (`zoo.hub.save_pretrained`, `regzoo export --format hub`), the class read from the file.

    The model takes raw inputs: its normalization statistics are part of what is loaded.
    Nothing is unpickled: a checkpoint is read with `weights_only=True`, a folder's weights are
    safetensors. A user's model is recorded by its import path, which is imported only when it
    is registered (an entry point of `regzoo.models`, `register_model`) or with
    `trust_code=True`.
    """
    path = Path(path)
    if path.is_dir():
        return from_pretrained(path, map_location=map_location, trust_code=trust_code)
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ValueError(
            f"{where} cannot be read (truncated, damaged, or holding more than weights): "
            f"{one_line(exc, lines=2)}"
        ) from exc
    if not (
        isinstance(ckpt, dict)
        and isinstance(ckpt.get("state_dict"), Mapping)
        and isinstance(ckpt.get("hyper_parameters"), Mapping)
    ):
        raise ValueError(f"{where} is not a regzoo model checkpoint")
    name = ckpt.get("regzoo_model")
    if not isinstance(name, str):
        raise ValueError(f"{where} does not say which zoo model it holds")
    check_trusted(name, where=where, trust_code=trust_code)
    try:  # a damaged or edited checkpoint: hparams or weights that do not fit together
        model = create_model(name, **ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{where} does not rebuild its model: {one_line(exc, lines=2)}") from exc
    model.eval()
    return model
