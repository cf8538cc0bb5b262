"""A study's best model reused as a user would: exported in every format, fed the test split's
raw inputs (as the dataset defines them), its accuracy compared with the trial's stored one.

    python -m benchmarks.reuse cnn-digits [--storage sqlite:///runs/studies.db]

Formats: the checkpoint and the hub folder through regzoo (`load_model`), the `torch.export`
program through `torch.export.load` alone, ONNX through onnxruntime alone. Every one holds the
fitted normalization, so every one should reach the trial's `test/acc` from raw inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from regzoo.datamodules import create_datamodule
from regzoo.studies import DEFAULT_STORAGE
from regzoo.studies.loop.read import best_trial, checkpoint_of, load_study
from regzoo.studies.results.export import to_onnx, to_pt2
from regzoo.zoo import load_model, save_pretrained


def raw_test_split(study_config: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The trial's test split, raw: the study's data options with the trial's own seed."""
    data = dict(study_config["data"])
    name = data.pop("name")
    dm = create_datamodule(name, seed=seed, **data)
    dm.prepare_data()
    dm.setup("test")
    x, y = dm.splits["test"]
    return x.numpy(), y.numpy()


def logits_by_format(checkpoint: Path, x: np.ndarray, folder: Path) -> dict[str, np.ndarray]:
    model = load_model(checkpoint)
    hub, pt2, onnx = folder / "hub", folder / "model.pt2", folder / "model.onnx"
    save_pretrained(model, hub)
    to_pt2(model, pt2, model.example_input_array)
    to_onnx(model, onnx, model.example_input_array)
    import onnxruntime as ort

    inputs = torch.from_numpy(x)
    with torch.no_grad():
        out = {
            "ckpt (load_model)": model(inputs).numpy(),
            "hub folder (load_model)": load_model(hub)(inputs).numpy(),
            "pt2 (torch.export.load)": torch.export.load(str(pt2)).module()(inputs).numpy(),
        }
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    out["onnx (onnxruntime)"] = session.run(None, {"input": x})[0]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reuse", description=__doc__)
    p.add_argument("study", nargs="?", default="cnn-digits")
    p.add_argument("--storage", default=DEFAULT_STORAGE)
    args = p.parse_args(argv)
    study = load_study(args.study, args.storage)
    trial = best_trial(study)
    config = json.loads(study.user_attrs["config"])
    x, y = raw_test_split(config, int(config["seed"]) + trial.number)
    print(
        f"{args.study}: trial {trial.number}, stored test/acc {trial.user_attrs['test/acc']:.4f}, "
        f"{len(y)} raw test inputs, range [{x.min():.3g}, {x.max():.3g}]"
    )
    with tempfile.TemporaryDirectory() as tmp:
        logits = logits_by_format(checkpoint_of(trial), x, Path(tmp))
    reference = logits["ckpt (load_model)"]
    for name, values in logits.items():
        accuracy = float((values.argmax(1) == y).mean())
        diff = float(np.abs(values - reference).max())
        print(f"  {name:<26} accuracy {accuracy:.4f}   max |logit - ckpt's| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
