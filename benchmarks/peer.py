"""The script a new user would write instead of `regzoo run studies/configs/default.yaml`.

In the style of optuna-examples' `pytorch/pytorch_lightning_simple.py`: an Optuna objective that
builds one Lightning Trainer per trial, with Lightning's `EarlyStopping` and optuna-integration's
`PyTorchLightningPruningCallback`, TPE and a `MedianPruner`; then the best parameters retrained
with 5 new seeds and their mean test accuracy with a 95% interval. The model and the data are
regzoo's public `create_model` / `create_datamodule` (the same CNN and digits split as the
default study): what the user writes by hand is the loop around them. `benchmarks.versus_peer`
races it against regzoo.

    .venv/bin/python benchmarks/peer.py [--trials 16] [--epochs 30] [--seeds 5] [--threads N]
        [--storage URL] [--json PATH]

The default study's settings, mirrored here by hand:

- model `cnn` (channels 32, 64; hidden 128; batchnorm; Adam; cosine schedule), data `digits`
  (batch 64, standard normalization), the validation split drawn from seed 0 in every run;
- search: lr 2e-3..2e-2 (log), dropout 0..0.5, regularization none | l1 (1e-6..1e-4, log) |
  l2 (1e-5..1e-2, log) | weight_decay (1e-4..1e-1, log), augmentation shift 0..0.1,
  rotation 0..10, zoom 0..0.1, noise 0..0.05, suggested in that order;
- TPE seeded 0, MedianPruner(n_startup_trials=3, n_warmup_steps=5) on val/acc, 16 trials,
  trial n seeded n, at most 30 epochs, EarlyStopping on val/loss with patience 5;
- the best trial (highest val/acc) retrained with seeds 100000..100004, tested, summarized by
  the mean and its Student-t 95% interval.

Where it differs, as optuna-examples does: the objective is the last epoch's val/acc and the
test uses the last epoch's weights (no checkpoint; regzoo keeps the best val/acc epoch, ties
broken by val/loss); no logger, progress bar or model summary (regzoo writes a CSV log per run).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch
from lightning.pytorch.callbacks import EarlyStopping
from optuna_integration import PyTorchLightningPruningCallback
from scipy import stats

from regzoo import create_datamodule, create_model

TRIALS = 16
EPOCHS = 30
PATIENCE = 5
SEEDS = 5
SPLIT_SEED = 0  # every run is validated on the same digits, as the study's `seed: 0`
CONFIRM_SEED = 100_000  # new seeds, far from the trials' 0..15, as regzoo confirm's


def suggest(trial: optuna.trial.BaseTrial) -> dict[str, Any]:
    """The default study's search space, by hand (same order, so TPE's startup draws match)."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 2e-3, 2e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "l1": 0.0,
        "l2": 0.0,
        "weight_decay": 0.0,
    }
    regularization = trial.suggest_categorical(
        "regularization", ["none", "l1", "l2", "weight_decay"]
    )
    if regularization == "l1":
        params["l1"] = trial.suggest_float("l1", 1e-6, 1e-4, log=True)
    elif regularization == "l2":
        params["l2"] = trial.suggest_float("l2", 1e-5, 1e-2, log=True)
    elif regularization == "weight_decay":
        params["weight_decay"] = trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True)
    params["augment"] = {
        "shift": trial.suggest_float("shift", 0.0, 0.1),
        "rotation": trial.suggest_float("rotation", 0.0, 10.0),
        "zoom": trial.suggest_float("zoom", 0.0, 0.1),
        "noise": trial.suggest_float("noise", 0.0, 0.05),
    }
    return params


def fit(
    params: dict[str, Any], seed: int, epochs: int, trial: optuna.Trial | None = None
) -> tuple[L.Trainer, L.LightningModule, L.LightningDataModule]:
    """One run: a fresh datamodule, model and Trainer; pruned trials raise TrialPruned."""
    L.seed_everything(seed, workers=True, verbose=False)
    hparams = {k: v for k, v in params.items() if k != "augment"}
    dm = create_datamodule(
        "digits",
        batch_size=64,
        normalize="standard",
        augment=params["augment"],
        seed=seed,
        split_seed=SPLIT_SEED,
    )
    model = create_model(
        "cnn",
        input_shape=dm.input_shape,
        num_classes=dm.num_classes,
        normalize=dm.normalize,
        channels=(32, 64),
        hidden=(128,),
        batchnorm=True,
        optimizer="adam",
        scheduler="cosine",
        **hparams,
    )
    callbacks: list[L.Callback] = [EarlyStopping(monitor="val/loss", patience=PATIENCE)]
    if trial is not None:
        callbacks.append(PyTorchLightningPruningCallback(trial, monitor="val/acc"))
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    return trainer, model, dm


def search(trials: int, epochs: int, storage: str | None = None) -> optuna.Study:
    """The tuning: one Trainer per trial, trial n seeded n."""

    def objective(trial: optuna.Trial) -> float:
        trainer, _, _ = fit(suggest(trial), seed=trial.number, epochs=epochs, trial=trial)
        return trainer.callback_metrics["val/acc"].item()

    study = optuna.create_study(
        study_name="peer",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5),
    )
    study.optimize(objective, n_trials=trials, gc_after_trial=True)
    return study


def confirm(params: dict[str, Any], seeds: int, epochs: int) -> list[float]:
    """The best parameters retrained with new seeds: each run's test accuracy."""
    accuracies = []
    for seed in range(CONFIRM_SEED, CONFIRM_SEED + seeds):
        trainer, model, dm = fit(params, seed=seed, epochs=epochs)
        accuracies.append(trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"])
    return accuracies


def interval(values: list[float]) -> tuple[float, float, float]:
    """The mean and its Student-t 95% interval."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--storage", default=None, help="an Optuna storage URL (default: memory)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    study = search(args.trials, args.epochs, args.storage)
    best = study.best_trial
    accuracies = confirm(suggest(optuna.trial.FixedTrial(best.params)), args.seeds, args.epochs)
    mean, low, high = interval(accuracies)
    result = {
        "trials": len(study.trials),
        "states": [t.state.name for t in study.trials],
        "best": {"number": best.number, "value": best.value, "params": best.params},
        "test_acc": accuracies,
        "mean": mean,
        "low": low,
        "high": high,
        "threads": torch.get_num_threads(),
    }
    print(f"best trial {best.number}: val/acc {best.value:.4f} {best.params}")
    print(f"confirmed test/acc {mean:.4f} [{low:.4f}, {high:.4f}] over {args.seeds} seeds")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
