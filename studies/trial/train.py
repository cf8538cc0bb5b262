"""One run on its own: a fresh Lightning Trainer for a `TrialSpec`, driven by the run's
`Lifecycle` (kept checkpoint, early stopping, pruning), its kept checkpoint evaluated once on
the training split (`train_eval/...`, pruned runs too) and tested.

`train_run` is how the executor trains a run that does not batch, each DDP rank included;
anything with its signature (`TrainFn`) can stand in for it (a DDP leader broadcasts the spec
first). This is the one place a Trainer is built for a run.
"""

from __future__ import annotations

import inspect
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import optuna
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities.model_helpers import is_overridden

from regzoo.datamodules import (
    build_datamodule,
    data_facts,
    datamodule_options,
    train_eval_batches,
)
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import REGULARIZATION, split_params
from regzoo.studies.trial import tracking
from regzoo.studies.trial.callbacks import LifecycleCallback, SwallowedInterrupt
from regzoo.studies.trial.lifecycle import Lifecycle, error_text
from regzoo.studies.trial.spec import KEPT_PREFIXES, TRAIN_EVAL, RunResult, TrialSpec
from regzoo.zoo import Classifier, build_model, model_hparams
from regzoo.zoo.metrics import evaluate

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


def train_run(
    spec: TrialSpec,
    *,
    trial: optuna.Trial | None = None,
    wandb_mode: str = "disabled",
    callbacks: list[L.Callback] | None = None,
    trainer_overrides: dict[str, Any] | None = None,
    describe: Callable[[BaseException], str] = error_text,
) -> RunResult:
    """Train `spec` in a fresh Trainer and test its kept checkpoint; recorded and told to
    `trial` (None: a plain run) by the run's `Lifecycle`.

    The validation split is drawn from the config's `seed` (unless the data options set
    `split_seed`), so every seed is validated on the same samples; `spec.seed` varies the rest.
    `trainer_overrides` are Trainer arguments outside the config (DDP: strategy, devices, nodes).
    An exception fails the run (its result says why, in `describe`'s words; a `describe` that
    raises propagates it); Ctrl-C fails it too, then propagates.
    """
    with restored_environ(SEED_ENV):  # seed_everything tells DataLoader workers through these
        return _train(spec, trial, wandb_mode, callbacks or [], trainer_overrides or {}, describe)


def _train(
    spec: TrialSpec,
    trial: optuna.Trial | None,
    wandb_mode: str,
    callbacks: list[L.Callback],
    trainer_overrides: dict[str, Any],
    describe: Callable[[BaseException], str],
) -> RunResult:
    """Build the run, fit it, test its kept checkpoint; however that ends, `life.finish` turns
    it into the run's result, recorded and told once."""
    cfg = spec.config
    life = Lifecycle(spec, trial)
    name = "last.ckpt" if cfg.checkpoint == "last" else "best.ckpt"
    keeper = LifecycleCallback(life, spec.run_dir / name)
    checkpoint = keeper.path
    try:  # from here on, whatever happens ends as the run's result, recorded and told
        trainer, model, dm = _trainer(
            spec, trial, wandb_mode, [keeper, *callbacks], trainer_overrides, life
        )
        interruptible(trainer, trainer.fit, model, datamodule=dm)
        checkpoint = keeper.path  # rank 0's, under DDP
        evaluated: dict[str, float] = {}
        if life.evaluable and keeper.kept:  # the same answer on every rank
            load_weights(model, checkpoint)
            if isinstance(model, Classifier):  # logits out; a user's LightningModule: its own
                evaluated = train_eval(model, dm)
            if life.testable and is_overridden("test_step", model):  # a user's may have none
                evaluated |= _test(trainer, model, dm)
    except Exception as exc:
        try:
            error = describe(exc)
        except BaseException:
            life.finish(checkpoint=checkpoint, error=error_text(exc))
            raise
        return life.finish(checkpoint=checkpoint, error=error)
    except BaseException as exc:  # Ctrl-C: recorded and told, then the caller stops
        life.finish(checkpoint=checkpoint, error=error_text(exc))
        raise
    result = life.finish(
        checkpoint=checkpoint,
        evaluated=evaluated,
        attrs=probe_attrs(callbacks),
        parameters=trainable_parameters(model),
    )
    log_kept(trainer.loggers, life, result)
    return result


def _trainer(
    spec: TrialSpec,
    trial: optuna.Trial | None,
    wandb_mode: str,
    callbacks: list[L.Callback],
    trainer_overrides: dict[str, Any],
    life: Lifecycle,
) -> tuple[L.Trainer, L.LightningModule, L.LightningDataModule]:
    """The run's seeded datamodule and model, and the Trainer that fits them with `callbacks`
    (its lifecycle's first), the run's CSV and W&B loggers; the W&B run is given to the
    lifecycle, which closes it."""
    cfg = spec.config
    L.seed_everything(spec.seed, workers=True, verbose=False)
    model_kw, data_kw, trainer_kw = split_params(spec.fixed, spec.params)
    dm, model = build_run(cfg, spec.seed, model_kw, data_kw)
    if "split_seed" in datamodule_options(cfg.data.name):  # recorded with the run's data
        data_kw = {"split_seed": cfg.seed, **data_kw}
    # Never reuse a folder: another study's trial (or this one's earlier run) may refer to it.
    spec.run_dir.mkdir(parents=True, exist_ok=False)
    trainer_kw = {**trainer_kw, **trainer_overrides}
    wandb = run_logger(
        cfg, spec.run_name, run_config(spec, model, data_kw, trainer_kw), mode=wandb_mode
    )
    life.wandb = wandb
    # As soon as the run exists: a trial that fails or is pruned still points at its run.
    if trial is not None:
        for key, value in tracking.run_attrs(wandb).items():
            trial.set_user_attr(key, value)
    trainer = build_trainer(
        trainer_kw,
        callbacks=[SwallowedInterrupt(), *callbacks],
        logger=[CSVLogger(spec.run_dir, name="", version=""), *([wandb] if wandb else [])],
        default_root_dir=spec.run_dir,
    )
    return trainer, model, dm


def build_trainer(trainer_kw: dict[str, Any], **kwargs: Any) -> L.Trainer:
    """The Lightning Trainer of a run or a population: the config's trainer values (those
    set), regzoo's quiet defaults, and `kwargs` (callbacks, loggers, what a population
    changes). The one place a Trainer is built."""
    defaults: dict[str, Any] = {
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,  # regzoo logs per epoch only: no per-step cost, no warning
    }
    values = {k: v for k, v in trainer_kw.items() if v is not None}
    return L.Trainer(**{**defaults, **values, **kwargs})


def load_weights(model: L.LightningModule, checkpoint: Path) -> None:
    """The kept epoch's weights, from its checkpoint, into `model` (nothing unpickled)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)


def train_eval(model: L.LightningModule, dm: L.LightningDataModule) -> dict[str, float]:
    """`train_eval/loss`, `/acc` and `/ece`: the whole training split evaluated as validation
    is (eval mode, no augmentation), from the kept weights. One forward pass over the split:
    about a third of one training epoch (benchmarks/overfitting.py measures it against
    the run's time)."""
    return evaluate(model, train_eval_batches(dm), TRAIN_EVAL)


def _test(
    trainer: L.Trainer, model: L.LightningModule, dm: L.LightningDataModule
) -> dict[str, float]:
    """The test metrics of the model's (the kept) weights, evaluated once."""
    metrics = interruptible(trainer, trainer.test, model, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in metrics[0].items()}


def log_kept(loggers: Iterable[Logger], life: Lifecycle, result: RunResult) -> None:
    """The run's final metrics (its kept checkpoint's evaluations and gaps) as one row of its
    `metrics.csv`, at the kept epoch: the learning curves show `train_eval` where it was
    measured. The W&B run has them in its summary (`Lifecycle.finish`)."""
    epoch = life.kept_epoch
    final = {k: v for k, v in result.metrics.items() if k.startswith(KEPT_PREFIXES)}
    if epoch is None or not final:
        return
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            logger.log_metrics({"epoch": epoch, **final})
            logger.save()


def probe_attrs(probes: list[Any]) -> dict[str, Any]:
    """The user attributes a run's probes record (an experiment's `summary()` of each)."""
    attrs: dict[str, Any] = {}
    for probe in probes:
        attrs.update(getattr(probe, "summary", dict)())
    return attrs


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
        objective=(cfg.objectives[0].metric, cfg.objectives[0].direction),
        save_dir=Path(cfg.runs_dir),
        job_type=tracking.job_type_of(run_name),
        concurrent=concurrent,
    )


def run_config(
    spec: TrialSpec, model: L.LightningModule, data: dict[str, Any], trainer: dict[str, Any]
) -> dict[str, Any]:
    """A run's config: each value once, under its section (`tracking`'s module docstring).

    `trial` is left out of a run without an Optuna trial (`regzoo train`).
    """
    cfg = spec.config
    config: dict[str, Any] = {} if spec.trial is None else {"trial": spec.trial.number}
    config |= {
        "study": cfg.name,
        # `regularization` is the search's selector, not an hparam (it sets l1/l2/weight_decay):
        # kept beside them so that every searched key is a path into the config.
        "model": {"name": cfg.model.name, **dict(model.hparams), **_selector(spec.params)},
        "data": {"name": cfg.data.name, **data_defaults(cfg.data.name), **data},
        "trainer": trainer,
        "seed": int(spec.seed),
        "objective": cfg.objectives[0].model_dump(exclude_none=True),
        "checkpoint": cfg.checkpoint,
        "sampler": cfg.sampler.model_dump(),
        "pruner": cfg.pruner.model_dump(),
        "n_parameters": trainable_parameters(model),
        "searched": list(spec.params),
    }
    return tracking.plain(config)


def trainable_parameters(model: torch.nn.Module) -> int:
    """The `model/params` objective and a run's `n_parameters`: the trainable ones."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _selector(params: dict[str, Any]) -> dict[str, Any]:
    key = f"model.{REGULARIZATION}"
    return {REGULARIZATION: params[key]} if key in params else {}


def data_defaults(name: str) -> dict[str, Any]:
    """The datamodule's options with their defaults; its `seed` is the run's, at top level."""
    options = datamodule_options(name).items()
    return {
        k: p.default for k, p in options if p.default is not inspect.Parameter.empty and k != "seed"
    }


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


def build_run(
    cfg: StudyConfig, seed: int, model_kw: dict[str, Any], data_kw: dict[str, Any]
) -> tuple[L.LightningDataModule, L.LightningModule]:
    """A run's datamodule (the study's split, the run's `seed`) and its model, given what it
    declares of the data (`model_facts`). The one place a run's model and data are built."""
    dm = build_datamodule(cfg.data.name, study_seed=cfg.seed, run_seed=seed, **data_kw)
    model = build_model(cfg.model.name, **model_facts(cfg, dm), **model_kw)
    return dm, model


def model_facts(cfg: StudyConfig, dm: L.LightningDataModule) -> dict[str, Any]:
    """What the config's model takes from the datamodule (`datamodules.data_facts`): all of it
    for a Classifier, what its constructor declares for a LightningModule of the user's."""
    facts = data_facts(dm, name=cfg.data.name)
    accepted = model_hparams(cfg.model.name)
    return {k: v for k, v in facts.items() if k in accepted}


class TrainFn(Protocol):
    """The signature of `train_run`, for whatever trains a run in its place (a DDP leader
    broadcasts the spec first)."""

    def __call__(
        self,
        spec: TrialSpec,
        *,
        trial: optuna.Trial | None = None,
        wandb_mode: str = "disabled",
        callbacks: list[L.Callback] | None = None,
        trainer_overrides: dict[str, Any] | None = None,
    ) -> RunResult: ...
