"""One training run: a fresh Lightning Trainer with sampled parameters, its kept checkpoint
(the best epoch's, or the last one's with `checkpoint: last`) tested once after training.

`train_run` is what every trial, `regzoo train`, each DDP rank and each experiment setting calls;
anything with its signature (`TrainFn`) can stand in for it (a DDP leader broadcasts the
parameters first).
"""

from __future__ import annotations

import inspect
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import optuna
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from regzoo.datamodules import ArrayDataModule, create_datamodule, datamodule_options
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import REGULARIZATION, split_params
from regzoo.studies.results import tracking
from regzoo.studies.trial.callbacks import OptunaPruning, SwallowedInterrupt, TieBreakCheckpoint
from regzoo.zoo import create_model

SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextmanager
def restored_environ(names: tuple[str, ...]) -> Iterator[None]:
    """The environment variables `names` as they were before the block."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class NonFiniteObjective(RuntimeError):
    """The monitored metric became NaN or infinite (a diverging run): the trial fails."""


@dataclass
class TrialResult:
    """What one training run produced."""

    value: float
    test: dict[str, float]
    epochs: int
    checkpoint: Path
    tie_break: float | None = None  # the objective's tie_break metric at the kept epoch
    pruned_at: int | None = None
    nonfinite_at: int | None = None
    nonfinite_metric: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


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
    """Train once with `params` over the config's fixed values; test the kept checkpoint.

    The validation split is drawn from `cfg.seed` (unless the data options set `split_seed`),
    so every seed is validated on the same samples; `seed` varies the rest.
    `trainer_overrides` are Trainer arguments outside the config (DDP: strategy, devices, nodes).
    """
    with restored_environ(SEED_ENV):  # seed_everything tells DataLoader workers through these
        return _train(
            cfg, params, run_dir, trial, wandb_mode, run_name, callbacks, seed, trainer_overrides
        )


def _train(
    cfg: StudyConfig,
    params: dict[str, Any],
    run_dir: Path,
    trial: optuna.trial.BaseTrial | None,
    wandb_mode: str,
    run_name: str,
    callbacks: list[L.Callback] | None,
    seed: int | None,
    trainer_overrides: dict[str, Any] | None,
) -> TrialResult:
    start = time.perf_counter()
    seed = cfg.seed if seed is None else seed
    L.seed_everything(seed, workers=True, verbose=False)
    model_kw, data_kw, trainer_kw = split_params(cfg, params)
    data_kw = {"split_seed": cfg.seed, **data_kw}
    dm = create_datamodule(cfg.data.name, seed=seed, **data_kw)
    model = create_model(cfg.model.name, **data_facts(dm), **model_kw)
    # Never reuse a folder: another study's trial (or this one's earlier run) may refer to it.
    run_dir.mkdir(parents=True, exist_ok=False)
    pruning = OptunaPruning(trial, cfg.objective.metric)
    checkpoint = _checkpoint(cfg, run_dir)
    all_callbacks: list[L.Callback] = [checkpoint, pruning, SwallowedInterrupt()]
    all_callbacks += callbacks or []
    early = early_stopping(cfg)
    if early is not None:
        all_callbacks.append(early)
    trainer_kw = {**trainer_kw, **(trainer_overrides or {})}
    loggers: list[Logger] = [CSVLogger(run_dir, name="", version="")]
    wandb_logger = run_logger(
        cfg,
        run_name,
        run_config(cfg, params, model, data_kw, trainer_kw, seed=seed, trial=trial),
        mode=wandb_mode,
    )
    epochs = tracking.EpochRecord()
    if wandb_logger is not None:
        loggers.append(wandb_logger)
        all_callbacks.append(epochs)
    state = "failed"
    summary: dict[str, Any] = {}
    error: str | None = None
    trainer: L.Trainer | None = None
    try:  # from here on, the run is closed with what the trial got to
        # As soon as the run exists: a trial that fails or is pruned still points at its run.
        for key, value in tracking.run_attrs(wandb_logger).items():
            if trial is not None:
                trial.set_user_attr(key, value)
        trainer = L.Trainer(
            **{k: v for k, v in trainer_kw.items() if v is not None},
            callbacks=all_callbacks,
            logger=loggers,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=run_dir,
            num_sanity_val_steps=0,
            log_every_n_steps=1,  # regzoo logs per epoch only: no per-step cost, no warning
        )
        interruptible(trainer, trainer.fit, model, datamodule=dm)
        result = TrialResult(
            value=_score(checkpoint, trainer, cfg.objective.metric),
            test={},
            epochs=trainer.current_epoch,
            checkpoint=Path(checkpoint.best_model_path),
            tie_break=_tie_break(checkpoint, trainer, cfg.objective.tie_break),
            pruned_at=pruning.pruned_at,
            nonfinite_at=pruning.nonfinite_at,
            nonfinite_metric=pruning.nonfinite_metric,
            params=params,
        )
        if result.pruned_at is None and result.nonfinite_at is None and result.checkpoint.is_file():
            metrics = interruptible(
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
        if result.tie_break is not None:
            summary[f"best/{cfg.objective.tie_break}"] = result.tie_break
        if result.pruned_at is not None:
            summary["pruned_at"] = result.pruned_at
        if result.nonfinite_at is not None:
            error = nonfinite_reason(result, cfg.objective.metric)
        return result
    except BaseException as exc:
        error = error_text(exc)
        summary = {"epochs": trainer.current_epoch} if trainer is not None else {}
        raise
    finally:
        if wandb_logger is not None:
            objective = cfg.objective
            summary.update(
                epochs.summary(
                    objective.metric,
                    objective.direction,
                    tie_break=objective.tie_break,
                    tie_max=objective.tie_break_maximize,
                )
            )
            if cfg.checkpoint == "last" and trainer is not None:  # the epoch kept is the last
                summary["best_epoch"] = max(trainer.current_epoch - 1, 0)
            summary["seconds"] = round(time.perf_counter() - start, 3)
            if error is not None:
                summary["error"] = error
        tracking.finish(wandb_logger, summary, state=state)


def early_stopping(cfg: StudyConfig) -> EarlyStopping | None:
    """The config's early stopping as Lightning's callback (None without one); a population
    keeps one per member and applies its criteria itself."""
    es = cfg.early_stopping
    if es is None:
        return None
    return EarlyStopping(
        monitor=es.monitor,
        patience=es.patience,
        mode=es.resolved_mode,
        min_delta=es.min_delta,
        check_finite=True,
    )


def run_logger(
    cfg: StudyConfig, run_name: str, config: dict[str, Any], *, mode: str, concurrent: bool = False
) -> WandbLogger | None:
    """The W&B run of one trial (`tracking.make_logger`) in the study's group, named
    `<study>-<run_name>`; `concurrent` for runs open side by side (a population's members)."""
    return tracking.make_logger(
        mode=mode,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.name,
        name=f"{cfg.name}-{run_name}",
        config=config,
        tags=[cfg.name],
        objective=(cfg.objective.metric, cfg.objective.direction),
        save_dir=Path(cfg.runs_dir),
        job_type=tracking.job_type_of(run_name),
        concurrent=concurrent,
    )


def run_config(
    cfg: StudyConfig,
    params: dict[str, Any],
    model: L.LightningModule,
    data: dict[str, Any],
    trainer: dict[str, Any],
    *,
    seed: int,
    trial: optuna.trial.BaseTrial | None,
) -> dict[str, Any]:
    """A run's config: each value once, under its section (`tracking`'s module docstring).

    `trial` is left out of a run without an Optuna trial (`regzoo train`).
    """
    config: dict[str, Any] = {} if trial is None else {"trial": int(trial.number)}
    config |= {
        "study": cfg.name,
        # `regularization` is the search's selector, not an hparam (it sets l1/l2/weight_decay):
        # kept beside them so that every searched key is a path into the config.
        "model": {"name": cfg.model.name, **dict(model.hparams), **_selector(params)},
        "data": {"name": cfg.data.name, **data_defaults(cfg.data.name), **data},
        "trainer": trainer,
        "seed": int(seed),
        "objective": cfg.objective.model_dump(exclude_none=True),
        "checkpoint": cfg.checkpoint,
        "sampler": cfg.sampler.model_dump(),
        "pruner": cfg.pruner.model_dump(),
        "n_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "searched": list(params),
    }
    return tracking.plain(config)


def _selector(params: dict[str, Any]) -> dict[str, Any]:
    key = f"model.{REGULARIZATION}"
    return {REGULARIZATION: params[key]} if key in params else {}


def data_defaults(name: str) -> dict[str, Any]:
    """The datamodule's options with their defaults; its `seed` is the run's, at top level."""
    options = datamodule_options(name).items()
    return {
        k: p.default for k, p in options if p.default is not inspect.Parameter.empty and k != "seed"
    }


def error_text(exc: BaseException) -> str:
    """How a trial's error is recorded (Optuna's user attr, the run's summary): one line."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C / SIGINT)"
    return f"{type(exc).__name__}: {exc}"[:1000]


def nonfinite_reason(result: TrialResult, objective: str) -> str:
    """Why a diverged trial failed: the objective, or the loss, that became NaN or infinite."""
    what = result.nonfinite_metric
    what = "objective" if what in (None, objective) else what
    return f"non-finite {what} at epoch {result.nonfinite_at}"


def interruptible(trainer: L.Trainer, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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


def _checkpoint(cfg: StudyConfig, run_dir: Path) -> ModelCheckpoint:
    """The callback that keeps the epoch a trial is scored and tested by: `best.ckpt`, the
    best epoch's (ties broken by `objective.tie_break`), or `last.ckpt`, the last epoch's."""
    objective = cfg.objective
    best: dict[str, Any] = {
        "dirpath": run_dir,
        "filename": "best",
        "monitor": objective.metric,
        "mode": "max" if objective.direction == "maximize" else "min",
        "auto_insert_metric_name": False,
        "enable_version_counter": False,
    }
    if cfg.checkpoint == "last":
        return ModelCheckpoint(**{**best, "filename": "last", "monitor": None})
    if objective.tie_break is None:
        return ModelCheckpoint(**best)
    return TieBreakCheckpoint(
        tie_break=objective.tie_break, tie_break_maximize=objective.tie_break_maximize, **best
    )


def _score(checkpoint: ModelCheckpoint, trainer: L.Trainer, metric: str) -> float:
    """The objective at the kept epoch: the best score, or the last epoch's metric."""
    score = checkpoint.best_model_score
    if score is None:
        score = trainer.callback_metrics.get(metric)
    return float(score) if score is not None else math.nan


def _tie_break(checkpoint: ModelCheckpoint, trainer: L.Trainer, metric: str | None) -> float | None:
    """The tie-break metric at the kept epoch (None without one, or before it was logged)."""
    if metric is None:
        return None
    if isinstance(checkpoint, TieBreakCheckpoint):
        return checkpoint.best_tie_break
    value = trainer.callback_metrics.get(metric)
    return float(value) if value is not None else None


def data_facts(dm: ArrayDataModule) -> dict[str, Any]:
    """What a model takes from its datamodule: the raw inputs' shape and range, the classes and
    their names, and the normalization it will apply (its statistics come at `setup`)."""
    return {
        "input_shape": dm.input_shape,
        "num_classes": dm.num_classes,
        "normalize": dm.normalize,
        "class_names": dm.class_names,
        "input_range": dm.raw_range,
    }


def fixed_size(cfg: StudyConfig) -> tuple[int, int]:
    """Trainable parameters and batch size of the config's fixed values (before any search):
    what the thread choice (`loop.threads`) weighs. Builds the model; loads no data."""
    model_kw, data_kw, _ = split_params(cfg, {})
    dm = create_datamodule(cfg.data.name, **data_kw)
    model = create_model(cfg.model.name, **data_facts(dm), **model_kw)
    return sum(p.numel() for p in model.parameters() if p.requires_grad), dm.batch_size


class TrainFn(Protocol):
    """The signature of `train_run`, for whatever trains a trial in its place."""

    def __call__(
        self,
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
    ) -> TrialResult: ...
