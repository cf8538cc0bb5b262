"""The Optuna objective: sample, train, record what the trial produced, report pruning.

Studies and the lecture's experiments share it: `run_trial` is one trial of either, with the
same records on the Optuna trial (epochs, seconds, checkpoint, test metrics, `pruned_at`,
`error`; `wandb_run_id`, and `wandb_url` online, set by `train_run` as soon as its W&B run
exists) and the same outcomes (a pruned trial raises `TrialPruned`, a diverged one fails with
`NonFiniteObjective`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import optuna

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import suggest
from regzoo.studies.trial.callbacks import EpochProgress
from regzoo.studies.trial.train import (
    NonFiniteObjective,
    TrainFn,
    TrialResult,
    error_text,
    nonfinite_reason,
    train_run,
)

Objective = Callable[[optuna.Trial], float]


def make_objective(
    cfg: StudyConfig,
    *,
    folder: Path,
    wandb_mode: str,
    progress: Any = None,
    train: TrainFn = train_run,
) -> Objective:
    """The objective of a study: trial n trains in `folder/trial-<n>` with seed `cfg.seed + n`."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg.search)
        return run_trial(
            trial,
            cfg,
            params,
            folder / f"trial-{trial.number}",
            seed=cfg.seed + trial.number,
            wandb_mode=wandb_mode,
            progress=progress,
            train=train,
        )

    return objective


def run_trial(
    trial: optuna.Trial,
    cfg: StudyConfig,
    params: dict[str, Any],
    run_dir: Path,
    *,
    seed: int,
    wandb_mode: str,
    run_name: str | None = None,
    callbacks: Sequence[L.Callback] = (),
    progress: Any = None,
    train: TrainFn = train_run,
    extra_attrs: Callable[[TrialResult], dict[str, Any]] | None = None,
) -> float:
    """Train one trial and record it; the objective's value, or TrialPruned/NonFiniteObjective.

    `extra_attrs` adds user attributes from the result (an experiment's probe summaries); they
    are recorded before a diverged trial fails, so its record is complete.
    """
    all_callbacks = list(callbacks)
    task = None
    if progress is not None:
        epochs = int(params.get("trainer.max_epochs", cfg.trainer.max_epochs))
        task = progress.add_task(f"trial {trial.number}", total=epochs, metrics="")
        all_callbacks.append(EpochProgress(progress, task, (cfg.objective.metric, "val/loss")))
    start = time.perf_counter()
    try:
        result = train(
            cfg,
            params,
            run_dir,
            trial=trial,
            wandb_mode=wandb_mode,
            run_name=run_name or f"trial-{trial.number}",
            callbacks=all_callbacks,
            seed=seed,
        )
    except Exception as exc:  # recorded on the trial; Optuna marks it failed and goes on
        trial.set_user_attr("error", error_text(exc))
        raise
    except KeyboardInterrupt as exc:  # Optuna marks it failed, then the study stops
        trial.set_user_attr("error", error_text(exc))
        raise
    finally:
        if task is not None:
            progress.remove_task(task)
    record_result(trial, result, time.perf_counter() - start, cfg.objective.metric)
    for key, value in (extra_attrs(result) if extra_attrs else {}).items():
        trial.set_user_attr(key, value)
    if result.nonfinite_at is not None:
        raise NonFiniteObjective(nonfinite_reason(result, cfg.objective.metric))
    if result.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned at epoch {result.pruned_at}")
    return result.value


def record_result(trial: optuna.Trial, result: TrialResult, seconds: float, objective: str) -> None:
    """What a trial records of its run (user attrs): epochs, seconds, checkpoint, tie-break,
    test metrics, and `pruned_at` / `error` where they apply."""
    trial.set_user_attr("epochs", result.epochs)
    trial.set_user_attr("seconds", round(seconds, 3))
    trial.set_user_attr("checkpoint", str(result.checkpoint))
    if result.tie_break is not None:  # ranks trials of equal value (results.read.ranked_trials)
        trial.set_user_attr("tie_break", result.tie_break)
    for key, value in result.test.items():
        trial.set_user_attr(key, value)
    if result.pruned_at is not None:
        trial.set_user_attr("pruned_at", result.pruned_at)
    if result.nonfinite_at is not None:
        trial.set_user_attr("error", nonfinite_reason(result, objective))
