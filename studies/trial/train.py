"""One training run: a fresh Lightning Trainer with sampled parameters, its best checkpoint
tested once after training.

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
from lightning.pytorch.loggers import CSVLogger, Logger

from regzoo.datamodules import ArrayDataModule, create_datamodule, datamodule_options
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import REGULARIZATION, split_params
from regzoo.studies.results import tracking
from regzoo.studies.trial.callbacks import OptunaPruning, SwallowedInterrupt
from regzoo.zoo import create_model

SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextmanager
def _restored_environ(names: tuple[str, ...]) -> Iterator[None]:
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
    """Train once with `params` over the config's fixed values; test the best checkpoint.

    `trainer_overrides` are Trainer arguments outside the config (DDP: strategy, devices, nodes).
    """
    with _restored_environ(SEED_ENV):  # seed_everything tells DataLoader workers through these
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
    dm = create_datamodule(cfg.data.name, seed=seed, **data_kw)
    model = create_model(cfg.model.name, **data_facts(dm), **model_kw)
    # Never reuse a folder: another study's trial (or this one's earlier run) may refer to it.
    run_dir.mkdir(parents=True, exist_ok=False)
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
    trainer_kw = {**trainer_kw, **(trainer_overrides or {})}
    loggers: list[Logger] = [CSVLogger(run_dir, name="", version="")]
    wandb_logger = tracking.make_logger(
        mode=wandb_mode,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        group=cfg.name,
        name=f"{cfg.name}-{run_name}",
        config=run_config(cfg, params, model, data_kw, trainer_kw, seed=seed, trial=trial),
        tags=[cfg.name],
        objective=(cfg.objective.metric, cfg.objective.direction),
        save_dir=Path(cfg.runs_dir),
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
            summary.update(epochs.summary(cfg.objective.metric, cfg.objective.direction))
            summary["seconds"] = round(time.perf_counter() - start, 3)
            if error is not None:
                summary["error"] = error
        tracking.finish(wandb_logger, summary, state=state)


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
        "objective": {"metric": cfg.objective.metric, "direction": cfg.objective.direction},
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
