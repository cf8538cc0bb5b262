"""A trained model as a Hugging Face-style folder: weights, config and model card.

    save_pretrained(model, "cnn-digits/")       # model.safetensors, config.json, README.md
    model = from_pretrained("cnn-digits/")       # or a hub repository id: "user/cnn-digits"
    model(raw_images).argmax(-1)                 # class indices; config.json names them

`model.safetensors` holds the weights and the input pipeline's statistics (safetensors: tensors
only, nothing that runs code when read); `config.json` the model's name (a zoo model's
registered name, a user's model's import path), its hparams (which rebuild it), what its raw
inputs are (shape, dtype, range, normalization) and the class names.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from regzoo._checks import one_line
from regzoo.zoo._registry import check_trusted, create_model
from regzoo.zoo.classifier import Classifier

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
FORMAT = "regzoo-model/1"  # config.json's `format`: what this reader understands


def model_config(model: Classifier) -> dict[str, Any]:
    """What `config.json` says of `model`: enough to rebuild it and to feed it."""
    described = model.input_description()
    return {
        "format": FORMAT,
        "model": model.model_name,
        "hparams": dict(model.hparams),
        "input": {k: v for k, v in described.items() if k != "class_names"},
        "class_names": described["class_names"],
    }


def save_pretrained(model: Classifier, folder: str | Path, *, card: str | None = None) -> Path:
    """Write `model` into `folder` (created): weights, config and `card` as its README.md."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": FORMAT})
    text = json.dumps(model_config(model), indent=2, sort_keys=True)
    (folder / CONFIG).write_text(text + "\n", encoding="utf-8")
    if card is not None:
        (folder / CARD).write_text(card, encoding="utf-8")
    return folder


def from_pretrained(
    source: str | Path,
    *,
    revision: str | None = None,
    map_location: str | torch.device = "cpu",
    trust_code: bool = False,
) -> Classifier:
    """The model in a folder written by `save_pretrained`, or in a hub repository of one.

    A user's model is recorded by its import path (`package.module:Class`), imported only
    when it is registered (an entry point of `regzoo.models`, `register_model`) or with
    `trust_code=True`: a downloaded folder must not run code of its choosing.

    Raises:
        FileNotFoundError: no such folder, and not a hub repository that can be reached.
        ValueError: a damaged or foreign `config.json` or `model.safetensors`, naming the file.
    """
    folder = Path(source)
    if not folder.is_dir():
        folder = _download(str(source), revision)
    config = _read_config(folder / CONFIG)
    check_trusted(config["model"], where=str(folder / CONFIG), trust_code=trust_code)
    weights = folder / WEIGHTS
    try:
        from safetensors.torch import load_file

        state = load_file(str(weights), device=str(map_location))
    except Exception as exc:  # missing, truncated, or not a safetensors file (a pickle, say)
        raise ValueError(f"{weights}: not a readable safetensors file: {one_line(exc)}") from exc
    try:
        model = create_model(config["model"], **config["hparams"])
        model.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(
            f"{folder}: {CONFIG} and {WEIGHTS} do not rebuild a model: {one_line(exc, lines=2)}"
        ) from exc
    return model.eval()


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: not a saved regzoo model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {one_line(exc)}") from exc
    if not (
        isinstance(config, dict)
        and config.get("format") == FORMAT
        and isinstance(config.get("model"), str)
        and isinstance(config.get("hparams"), dict)
    ):
        raise ValueError(
            f"{path}: not a regzoo model config (needs format {FORMAT!r}, model and hparams)"
        )
    return config


def _download(repo_id: str, revision: str | None) -> Path:
    """The repository's files in the local hub cache; one clear error when it cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=[WEIGHTS, CONFIG, CARD])
    except HFValidationError:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a folder nor a hub repository id"
        ) from None
    except Exception as exc:  # offline, unknown repository, no access
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder, and the hub repository cannot be fetched: "
            f"{one_line(exc)}"
        ) from None
    return Path(path)
