"""Export a study's best model: ONNX, TorchScript or the Lightning checkpoint itself.

regzoo export cnn-digits --format onnx [--out model.onnx] [--storage URL]
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch

from regzoo._checks import one_line
from regzoo.studies.results.read import ResultError, best_trial, checkpoint_of, load_study
from regzoo.zoo import Classifier, load_model

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "ckpt": ".ckpt"}


def export_best(name: str, *, fmt: str, storage: str, out: Path | None = None) -> Path:
    """Write the best trial's model of study `name` in `fmt`; return the file written.

    The default file is `export/<name>-trial-<n>.<ext>` beside the trial folders.
    """
    if fmt not in FORMATS:
        raise ResultError(f"--format {fmt!r} is not supported; allowed: {', '.join(FORMATS)}")
    trial = best_trial(load_study(name, storage))
    checkpoint = checkpoint_of(trial)
    model = _load(checkpoint)
    if out is None:
        out = checkpoint.parent.parent / "export" / f"{name}-trial-{trial.number}{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "ckpt":
        shutil.copyfile(checkpoint, out)
    elif fmt == "onnx":
        to_onnx(model, out)
    else:
        to_torchscript(model, out)
    return out


def _load(checkpoint: Path) -> Classifier:
    try:
        return load_model(checkpoint)
    except (OSError, ValueError) as exc:  # missing, damaged or foreign checkpoint
        raise ResultError(one_line(exc, lines=1)) from None


def to_onnx(model: Classifier, out: Path) -> None:
    """ONNX with a dynamic batch dimension: input `input` (B, *input_shape), output `logits`."""
    example = model.example_input_array  # (2, *input_shape): a batch of 1 would be specialized
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    # The exporter logs that torchvision (not a dependency) is missing, and warns on pytree.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.to_onnx(
            out,
            example,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )


def to_torchscript(model: Classifier, out: Path) -> None:
    """A traced TorchScript module: `torch.jit.load(out)(x)` gives the logits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream; still loadable
        traced = model.eval().to_torchscript(method="trace")
        torch.jit.save(traced, str(out))
