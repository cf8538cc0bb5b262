"""Run a study: one fresh Lightning Trainer per Optuna trial, tracked in W&B.

python -m studies run studies/configs/default.yaml --trials 20
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from optuna.trial import TrialState

from datamodules import create_datamodule
from studies import tracking
from studies._callbacks import EpochProgress, OptunaPruning, SwallowedInterrupt
from studies.config import StudyConfig
from studies.search import grid_space, split_params, suggest
from studies.storage import open_storage
from zoo import create_model

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class NonFiniteObjective(RuntimeError):
    """The monitored metric became NaN or infinite (a diverging run): the trial fails."""


@dataclass
class TrialResult:
    """What one training run produced."""

    value: float
    test: dict[str, float]
    epochs: int
    checkpoint: Path
    pruned_at: int | None = None
    nonfinite_at: int | None = None
    nonfinite_metric: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def quiet_lightning() -> None:
    """Keep a study's console to our own lines: no per-trial banners or data-loader hints."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimize_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietTrialOutcomes) for f in optimize_log.filters):
        optimize_log.addFilter(_QuietTrialOutcomes())


class _QuietTrialOutcomes(logging.Filter):
    """Optuna's warnings of failed trials, less what is not a bug.

    A diverged trial is an outcome: its warning stays, without the traceback. An interrupted
    trial is the user's Ctrl-C: both of its warnings go (the CLI prints one line instead).
    """

    def __init__(self) -> None:
        super().__init__()
        self._interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        number = re.match(r"Trial (\d+) failed with ", str(record.msg))
        if isinstance(error, KeyboardInterrupt):
            if number:
                self._interrupted.add(number.group(1))
            return False
        if number and number.group(1) in self._interrupted:  # "...failed with value None."
            self._interrupted.discard(number.group(1))
            return False
        if isinstance(error, NonFiniteObjective):
            record.exc_info, record.exc_text = None, None
        return True


def train_run(
    cfg: StudyConfig,
    params: dict[str, Any],
    run_dir: Path,
    *,
    trial: optuna.trial.BaseTrial | None = None,
    wandb_mode: str = "disabled",
    run_name: str = "train",
    callbacks: list[L.Callback] | None = None,
    seed: int | None = None,
    trainer_overrides: dict[str, Any] | None = None,
) -> TrialResult:
    """Train once with `params` over the config's fixed values; test the best checkpoint.

    `trainer_overrides` are Trainer arguments outside the config (DDP: strategy, devices, nodes).
    """
    seed = cfg.seed if seed is None else seed
    L.seed_everything(seed, workers=True, verbose=False)
    model_kw, data_kw, trainer_kw = split_params(cfg, params)
    dm = create_datamodule(cfg.data.name, seed=seed, **data_kw)
    model = create_model(
        cfg.model.name, input_shape=dm.input_shape, num_classes=dm.num_classes, **model_kw
    )
    if run_dir.exists():  # a stale directory of the same number from a deleted study
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    pruning = OptunaPruning(trial, cfg.objective.metric)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir,
        filename="best",
        monitor=cfg.objective.metric,
        mode="max" if cfg.objective.direction == "maximize" else "min",
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    all_callbacks: list[L.Callback] = [checkpoint, pruning, SwallowedInterrupt()]
    all_callbacks += callbacks or []
    if cfg.early_stopping is not None:
        es = cfg.early_stopping
        all_callbacks.append(
            EarlyStopping(
                monitor=es.monitor,
                patience=es.patience,
                mode=es.resolved_mode,
                min_delta=es.min_delta,
                check_finite=True,
            )
        )
    loggers: list[Logger] = [CSVLogger(run_dir, name="", version="")]
    wandb_logger = tracking.make_logger(
        mode=wandb_mode,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.name,
        name=f"{cfg.name}-{run_name}",
        config={**params, "trial": run_name},
        save_dir=Path(cfg.runs_dir),
    )
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    trainer = L.Trainer(
        **{k: v for k, v in {**trainer_kw, **(trainer_overrides or {})}.items() if v is not None},
        callbacks=all_callbacks,
        logger=loggers,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
        num_sanity_val_steps=0,
    )
    state = "failed"
    summary: dict[str, Any] = {}
    try:
        _interruptible(trainer, trainer.fit, model, datamodule=dm)
        result = TrialResult(
            value=_score(checkpoint, trainer, cfg.objective.metric),
            test={},
            epochs=trainer.current_epoch,
            checkpoint=Path(checkpoint.best_model_path),
            pruned_at=pruning.pruned_at,
            nonfinite_at=pruning.nonfinite_at,
            nonfinite_metric=pruning.nonfinite_metric,
            params=params,
        )
        if result.pruned_at is None and result.nonfinite_at is None and result.checkpoint.is_file():
            metrics = _interruptible(
                trainer,
                trainer.test,
                model,
                datamodule=dm,
                ckpt_path=str(result.checkpoint),
                verbose=False,
                weights_only=True,
            )
            result.test = {k: float(v) for k, v in metrics[0].items()}
        state = (
            "pruned"
            if result.pruned_at is not None
            else ("failed" if result.nonfinite_at is not None else "complete")
        )
        summary = {
            "best/" + cfg.objective.metric: result.value,
            **result.test,
            "epochs": result.epochs,
        }
        return result
    finally:
        tracking.finish(wandb_logger, summary, state=state)


def _interruptible(trainer: L.Trainer, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`trainer.fit` or `trainer.test`, with Ctrl-C surfacing as KeyboardInterrupt.

    On Ctrl-C Lightning ignores SIGINT from then on and calls `sys.exit(1)`, in `test` as in
    `fit`: a SystemExit would end the process with the trial left RUNNING. SIGINT gets back the
    handler it had before the call.
    """
    handler = signal.getsignal(signal.SIGINT)
    try:
        return call(*args, **kwargs)
    except SystemExit as exc:
        if trainer.interrupted:
            signal.signal(signal.SIGINT, handler or signal.default_int_handler)
            raise KeyboardInterrupt from exc
        raise


def _score(checkpoint: ModelCheckpoint, trainer: L.Trainer, metric: str) -> float:
    score = checkpoint.best_model_score
    if score is None:
        score = trainer.callback_metrics.get(metric)
    return float(score) if score is not None else math.nan


def make_sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    s = cfg.sampler
    if s.name == "grid":
        return optuna.samplers.GridSampler(grid_space(cfg.search), seed=s.seed)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s.seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=s.seed)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=cfg.trainer.max_epochs,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def open_study(cfg: StudyConfig, storage_url: str) -> optuna.Study:
    """Create the study, or load it to resume; the direction must match a stored study's."""
    storage = open_storage(storage_url)
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.name,
        direction=cfg.objective.direction,
        sampler=make_sampler(cfg),
        pruner=make_pruner(cfg),
        load_if_exists=True,
    )
    if study.direction.name.lower() != cfg.objective.direction:
        raise ValueError(
            f"study {cfg.name!r} in {storage_url} was created to "
            f"{study.direction.name.lower()}, the config asks to {cfg.objective.direction}"
        )
    if study.user_attrs.get("objective") != cfg.objective.metric:  # for report and dashboard
        study.set_user_attr("objective", cfg.objective.metric)
    return study


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def trial_dir(cfg: StudyConfig, number: int) -> Path:
    return cfg.study_dir / f"trial-{number}"


def make_objective(
    cfg: StudyConfig, *, wandb_mode: str, progress: Any = None, train: Any = train_run
) -> Any:
    """The Optuna objective: sample, train, record test metrics, report pruning.

    `train` (signature of `train_run`) lets a DDP study hand the sampled parameters to its ranks.
    """

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg.search)
        callbacks: list[L.Callback] = []
        task = None
        if progress is not None:
            task = progress.add_task(
                f"trial {trial.number}", total=_epochs_of(cfg, params), metrics=""
            )
            callbacks.append(EpochProgress(progress, task, (cfg.objective.metric, "val/loss")))
        start = time.perf_counter()
        try:
            result = train(
                cfg,
                params,
                trial_dir(cfg, trial.number),
                trial=trial,
                wandb_mode=wandb_mode,
                run_name=f"trial-{trial.number}",
                callbacks=callbacks,
                seed=cfg.seed + trial.number,
            )
        except Exception as exc:  # recorded on the trial; Optuna marks it failed and goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
            raise
        except KeyboardInterrupt:  # Optuna marks it failed, then the study stops
            trial.set_user_attr("error", "interrupted (Ctrl-C / SIGINT)")
            raise
        finally:
            if progress is not None and task is not None:
                progress.remove_task(task)
        _record(trial, result, time.perf_counter() - start, cfg.objective.metric)
        if result.nonfinite_at is not None:
            raise NonFiniteObjective(nonfinite_reason(result, cfg.objective.metric))
        if result.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {result.pruned_at}")
        return result.value

    return objective


def _record(trial: optuna.Trial, result: TrialResult, seconds: float, objective: str) -> None:
    trial.set_user_attr("epochs", result.epochs)
    trial.set_user_attr("seconds", round(seconds, 3))
    trial.set_user_attr("checkpoint", str(result.checkpoint))
    for key, value in result.test.items():
        trial.set_user_attr(key, value)
    if result.pruned_at is not None:
        trial.set_user_attr("pruned_at", result.pruned_at)
    if result.nonfinite_at is not None:
        trial.set_user_attr("error", nonfinite_reason(result, objective))


def nonfinite_reason(result: TrialResult, objective: str) -> str:
    """Why a diverged trial failed: the objective, or the loss, that became NaN or infinite."""
    what = result.nonfinite_metric
    what = "objective" if what in (None, objective) else what
    return f"non-finite {what} at epoch {result.nonfinite_at}"


def _epochs_of(cfg: StudyConfig, params: dict[str, Any]) -> int:
    return int(params.get("trainer.max_epochs", cfg.trainer.max_epochs))
