"""Export a study's best model, as raw inputs in and class logits out, in every format:

    regzoo export cnn-digits --format hub [--out DIR] [--push-to-hub USER/REPO]
    regzoo export cnn-digits --format pt2|onnx|ckpt [--out FILE] [--storage URL]
    regzoo export cnn-digits --format hub --calibrate   # temperature scaling, ECE before/after

- `hub`: a folder of `model.safetensors`, `config.json` and a `README.md` model card
  (`regzoo.load_model(DIR)` or `regzoo.zoo.from_pretrained(DIR or repo id)`).
- `pt2`: a `torch.export` ExportedProgram with a dynamic batch dimension; it loads with
  `torch.export.load(path).module()` where regzoo is not installed.
- `onnx`: the same graph for ONNX runtimes (needs `pip install 'regzoo[onnx]'`).
- `ckpt`: the Lightning checkpoint itself (`regzoo.load_model`).

Each one holds the fitted input normalization, so each takes the dataset's raw inputs. A study
of a LightningModule of the user's own (not a Classifier: no regzoo pipeline, no hparams that
rebuild it here) exports as `ckpt` (its class's `load_from_checkpoint`), `pt2` and `onnx` (its
own `forward`, on its `example_input_array` or a batch of the data's input shape); `hub` and
`--calibrate` are refused in one line. With
`--calibrate`, one temperature T is fitted on the validation split (`zoo.metrics.fit_temperature`,
LBFGS on the cross-entropy) and stored as the model's `temperature` hparam, which divides its
logits in every format: predictions do not change, confidences do. TorchScript
is not offered: torch deprecates it (every `torch.jit` call warns), and `torch.export` replaces it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch
from optuna.trial import FrozenTrial

from regzoo._checks import one_line
from regzoo._registry import import_path
from regzoo.datamodules import build_datamodule, data_facts
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.loop.read import (
    ResultError,
    checkpoint_of,
    chosen_trial,
    first_value,
    is_multi_objective,
    load_study,
    ranked_trials,
)
from regzoo.studies.trial.console import fmt
from regzoo.studies.trial.spec import FINAL_PREFIXES
from regzoo.studies.verdicts.read import read_verdicts
from regzoo.studies.verdicts.store import VerdictError, stored_config
from regzoo.studies.verdicts.tables import METRIC, OVERFITTING, interval
from regzoo.zoo import Classifier, is_foreign_model, load_model, model_class, save_pretrained
from regzoo.zoo.metrics import calibration_error, fit_temperature, logits_of

FORMATS = {"hub": "", "pt2": ".pt2", "onnx": ".onnx", "ckpt": ".ckpt"}
ONNX_PACKAGES = ("onnx", "onnxscript")
MAX_BATCH = 1 << 20
SHOWN_FEATURES = 30  # a model card lists at most this many feature names


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and the test split's ECE without it and with it."""

    temperature: float
    ece_before: float
    ece_after: float

    def line(self) -> str:
        return (
            f"calibrated: temperature {self.temperature:.4f} (fitted on the validation split); "
            f"test/ece {self.ece_before:.4f} before, {self.ece_after:.4f} after"
        )


@dataclass(frozen=True)
class Exported:
    """What `export_best` wrote, and the calibration it applied (None without one)."""

    path: Path
    calibration: Calibration | None = None


def export_best(
    name: str,
    *,
    fmt: str,
    storage: str,
    out: Path | None = None,
    push_to_hub: str | None = None,
    calibrate: bool = False,
    trial_number: int | None = None,
) -> Exported:
    """Write the best trial's model of study `name` in `fmt`, or trial `trial_number`'s (the
    choice a multi-objective study needs: `chosen_trial`); the file (or folder) written.

    The default is `export/<name>-trial-<n>[.ext]` beside the trial folders. `calibrate` fits
    the model's temperature on the validation split first (`calibrate_model`).
    """
    if fmt not in FORMATS:
        raise ResultError(f"--format {fmt!r} is not supported; allowed: {', '.join(FORMATS)}")
    if push_to_hub is not None and fmt != "hub":
        raise ResultError("--push-to-hub uploads a hub folder; use it with --format hub")
    if fmt == "onnx":
        check_onnx()
    study = load_study(name, storage)
    trial = chosen_trial(study, trial_number)
    checkpoint = checkpoint_of(trial)
    own = _own_class(study)
    model: L.LightningModule
    if own is not None:
        _check_own(own, fmt, calibrate)
        model = _load_own(own, checkpoint)
        example = _example(model, study, trial)
        calibration = None
    else:
        model = _load(checkpoint)
        example = model.example_input_array
        calibration = calibrate_model(study, trial, model) if calibrate else None
    if out is None:
        out = checkpoint.parent.parent / "export" / f"{name}-trial-{trial.number}{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "ckpt" and calibration is None:
        shutil.copyfile(checkpoint, out)
    elif fmt == "ckpt":
        assert isinstance(model, Classifier)  # `_check_own` refused the rest
        calibrated_checkpoint(checkpoint, model, out)
    elif fmt == "hub":
        assert isinstance(model, Classifier)
        card = model_card(study, trial, model, storage=storage, calibration=calibration)
        save_pretrained(model, out, card=card)
        if push_to_hub is not None:
            push(out, push_to_hub)
    elif fmt == "pt2":
        to_pt2(model, out, example)
    else:
        to_onnx(model, out, example)
    return Exported(out, calibration)


def _own_class(study: optuna.Study) -> type[L.LightningModule] | None:
    """The class of a study whose model is a LightningModule of the user's own, else None (a
    Classifier, a zoo model or a user's network wrapped into one; or a study recording no
    config, whose checkpoint `_load` reads for itself)."""
    try:
        cfg = stored_config(study)
    except VerdictError:
        return None
    name = cfg.model.name
    return model_class(name) if is_foreign_model(name) else None


def _check_own(own: type[L.LightningModule], fmt: str, calibrate: bool) -> None:
    """What a LightningModule of the user's own cannot be exported as, refused in one line."""
    what = f"model {import_path(own)!r} is a LightningModule of its own"
    if fmt == "hub":
        raise ResultError(
            f"--format hub: {what}; a hub folder holds a regzoo Classifier (its safetensors and "
            "the hparams that rebuild it). Export it as ckpt (its class's load_from_checkpoint), "
            "pt2 or onnx"
        )
    if calibrate:
        raise ResultError(
            f"--calibrate: {what}; the temperature is a regzoo Classifier's hparam. Export it "
            "without --calibrate"
        )


def _load_own(own: type[L.LightningModule], checkpoint: Path) -> L.LightningModule:
    # Imported as the study's config named it (the storage is trusted as the config is).
    try:
        return own.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing or damaged file, a constructor that refuses its hparams
        raise ResultError(
            f"{checkpoint}: {import_path(own)}.load_from_checkpoint failed: "
            f"{one_line(exc, lines=1)}"
        ) from None


def _example(model: L.LightningModule, study: optuna.Study, trial: FrozenTrial) -> Any:
    """What a user's own module is exported on: its `example_input_array`, else a batch of 2
    zeros of the raw input shape its data serves (`datamodules.data_facts`)."""
    if model.example_input_array is not None:
        return model.example_input_array
    shape = data_facts(_run_datamodule(stored_config(study), trial))["input_shape"]
    return torch.zeros(2, *shape)


def _run_datamodule(cfg: StudyConfig, trial: FrozenTrial) -> L.LightningDataModule:
    """The trial's datamodule, set up for fitting, as every run of the study split it (the
    study's seed), without augmentation; a user's datamodule included (`build_datamodule`)."""
    _, data_kw, _ = split_params(cfg, dict(trial.params))
    dm = build_datamodule(
        cfg.data.name, study_seed=cfg.seed, run_seed=cfg.seed, **{**data_kw, "augment": None}
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def calibrate_model(study: optuna.Study, trial: FrozenTrial, model: Classifier) -> Calibration:
    """Fit `model`'s temperature on the trial's validation split and set it; the test split's
    ECE before and after. The splits are the run's: the study's config with the trial's
    parameters, split by the config's seed as every trial is (`trial.train`)."""
    try:
        cfg = stored_config(study)
    except VerdictError as exc:
        raise ResultError(f"--calibrate: {exc}") from None
    dm = _run_datamodule(cfg, trial)
    model.hparams["temperature"] = 1.0
    val = logits_of(model, dm.val_dataloader())
    test = logits_of(model, dm.test_dataloader())
    temperature = fit_temperature(*val)
    model.hparams["temperature"] = temperature
    return Calibration(
        temperature,
        ece_before=calibration_error(*test),
        ece_after=calibration_error(test[0] / temperature, test[1]),
    )


def calibrated_checkpoint(checkpoint: Path, model: Classifier, out: Path) -> None:
    """The trial's checkpoint with the calibrated model's hparams (its temperature)."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"] = dict(model.hparams)
    torch.save(ckpt, out)


def _load(checkpoint: Path) -> Classifier:
    # The study's own config named the model it records: a user's class imports as it did
    # when the study trained it (the storage is trusted as the config is).
    try:
        return load_model(checkpoint, trust_code=True)
    except (OSError, ValueError) as exc:  # missing, damaged or foreign checkpoint
        raise ResultError(one_line(exc, lines=1)) from None


def check_onnx() -> None:
    """ONNX export's packages are an extra: without them, one line saying how to get them."""
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ResultError(
            f"--format onnx needs {', '.join(missing)}, which regzoo installs only with its "
            "onnx extra: pip install 'regzoo[onnx]'"
        )


def _batch_dim() -> Any:
    # A batch of 2 as the example: a batch of 1 would be specialized to 1.
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def to_pt2(model: L.LightningModule, out: Path, example: Any) -> None:
    """A `torch.export` program: `torch.export.load(out).module()(x)` gives the logits.
    `example`: a batch of inputs `(2, *raw_shape)`."""
    with warnings.catch_warnings():  # torch's exporter warns from its own internals
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(
                model.eval(), (example,), dynamic_shapes=({0: _batch_dim()},)
            )
        except Exception as exc:  # a user's forward that torch.export cannot trace
            raise ResultError(_untraceable(model, "pt2", exc)) from None
        torch.export.save(program, str(out))


def _untraceable(model: L.LightningModule, fmt: str, exc: Exception) -> str:
    return (
        f"--format {fmt}: {type(model).__name__}'s forward did not export on a batch of its "
        f"inputs: {one_line(exc, lines=1)}"
    )


def to_onnx(model: L.LightningModule, out: Path, example: Any) -> None:
    """ONNX with a dynamic batch dimension: input `input` (B, *raw_shape), output `logits`."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    # The exporter logs that torchvision (not a dependency) is missing, and warns on pytree.
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.eval().to_onnx(
                out,
                example,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: _batch_dim()},),
                verbose=False,
            )
    except Exception as exc:  # a user's forward that the exporter cannot trace
        out.unlink(missing_ok=True)
        raise ResultError(_untraceable(model, "onnx", exc)) from None
    finally:
        onnx_log.setLevel(level)


def push(folder: Path, repo_id: str) -> None:
    """Upload a hub folder to `repo_id` (created if missing); one line when it cannot be done."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    except Exception as exc:  # offline, no login, no permission
        raise ResultError(
            f"--push-to-hub {repo_id}: the folder is written ({folder}), the upload failed: "
            f"{one_line(exc, lines=1)}"
        ) from None


def model_card(
    study: optuna.Study,
    trial: FrozenTrial,
    model: Classifier,
    *,
    storage: str = "",
    calibration: Calibration | None = None,
) -> str:
    """The README.md of a hub folder: what was trained, how well, on what, how to load it.

    How well: the trial's own figures (one seed), its overfitting view (the gap between the
    training split and validation, the ECE), the calibration applied, and, where the study's
    confirmation (found in `storage`) retrained this trial's configuration, the confirmed test
    accuracy, gap and ECE over its seeds with their 95% intervals.
    """
    attrs, hp = trial.user_attrs, dict(model.hparams)
    metric = str(study.user_attrs.get("objective", "objective"))
    config = json.loads(study.user_attrs.get("config", "{}") or "{}")
    data = config.get("data", {})
    lines = [
        "---",
        "library_name: regzoo",
        "tags: [regzoo, pytorch-lightning, optuna]",
        "---",
        f"# {study.study_name}: trial {trial.number} ({model.model_name})",
        "",
        f"{_which(study, trial)} of the Optuna study `{study.study_name}`, trained by regzoo.",
        "",
        "## Results",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| {metric} (validation, the study's objective) | {fmt(first_value(trial))} |",
        *(f"| {k} | {fmt(v)} |" for k, v in sorted(attrs.items()) if k.startswith(FINAL_PREFIXES)),
        f"| epochs | {attrs.get('epochs', '-')} |",
        "",
        "One training run (one seed). `gap/acc` = train_eval/acc − val/acc: the training split "
        "evaluated as validation is (eval mode, no augmentation) minus validation, at the kept "
        "epoch; `ece`: the expected calibration error (15 bins, L1).",
        "",
        *_confirmed_lines(study, trial, storage),
        *_calibration_lines(calibration),
        "## Parameters searched",
        "",
        *(f"- `{k}` = `{fmt(v)}`" for k, v in trial.params.items()),
        "",
        "## Data",
        "",
        f"- dataset `{data.get('name', '?')}`, options "
        f"`{json.dumps({k: v for k, v in data.items() if k != 'name'}, sort_keys=True)}`",
        f"- split: validation share {data.get('val_fraction', 0.2)} drawn with seed "
        f"{int(config.get('seed', 0)) + trial.number}; the test split is fixed and was never "
        "used to select the model",
        f"- raw inputs: shape {tuple(model.raw_shape)}, float32"
        + (f", range {tuple(hp['input_range'])}" if hp.get("input_range") else "")
        + f"; normalization `{hp.get('normalize', 'none')}` is inside the model",
        f"- classes: {', '.join(hp['class_names']) if hp.get('class_names') else '-'}",
        *_feature_line(hp.get("feature_names")),
        "",
        "## Use",
        "",
        "```python",
        "from regzoo import load_model",
        "model = load_model('path/to/this/folder')  # or regzoo.zoo.from_pretrained('user/repo')",
        "logits = model(raw_inputs)                 # (B, *shape) raw, as the dataset gives them",
        "```",
    ]
    if ":" in model.model_name:  # a user's class, by import path
        lines += [
            "",
            f"The network is `{model.model_name}`: its package must be installed (an entry "
            "point of `regzoo.models` is trusted), or pass `load_model(folder, trust_code=True)`.",
        ]
    if "wandb_run" in attrs:
        lines += ["", f"W&B run: {attrs['wandb_run']}"]
    return "\n".join(lines) + "\n"


def _confirmed_lines(study: optuna.Study, trial: FrozenTrial, storage: str) -> list[str]:
    """The confirmation of the trial's configuration, where the study has one."""
    confirmation = read_verdicts(study, storage).confirmation
    found = [c for c in confirmation.candidates if c.trial == trial.number] if confirmation else []
    if not found or confirmation is None:
        return []
    cand, seeds = found[0], confirmation.seeds
    rows = [(m, cand.summary(m, seeds)) for m in (METRIC, *OVERFITTING)]
    return [
        f"### Confirmed over {rows[0][1].n} new seeds",
        "",
        "| metric | mean [95% CI] |",
        "| --- | --- |",
        *(f"| {m} | {interval(s)} |" for m, s in rows),
        "",
        f"`regzoo confirm` retrained this configuration with seeds {', '.join(map(str, seeds))}.",
        "",
    ]


def _calibration_lines(calibration: Calibration | None) -> list[str]:
    if calibration is None:
        return []
    return [
        "### Calibration",
        "",
        f"The logits are divided by a temperature of {calibration.temperature:.4f}, fitted on "
        f"the validation split: test/ece {calibration.ece_before:.4f} before, "
        f"{calibration.ece_after:.4f} after (predictions unchanged).",
        "",
    ]


def _which(study: optuna.Study, trial: FrozenTrial) -> str:
    """How the card names its trial: the best, one of a Pareto front, or one picked by number."""
    if is_multi_objective(study):
        front = {t.number for t in study.best_trials}
        return "A Pareto-front trial" if trial.number in front else "A trial"
    best = ranked_trials(study)[0]
    return "The best trial" if trial.number == best.number else "A trial picked by number"


def _feature_line(names: list[str] | None) -> list[str]:
    """The card's line of a table's feature columns, in input order (none for other inputs)."""
    if not names:
        return []
    shown = ", ".join(f"`{n}`" for n in names[:SHOWN_FEATURES])
    more = f", … ({len(names)} in all)" if len(names) > SHOWN_FEATURES else ""
    return [f"- features, in input order: {shown}{more}"]
