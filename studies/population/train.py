"""`train_population`: what `trial.train.train_run` is for one trial, for K trials at once.

    results = train_population(cfg, [MemberSpec(trial, params, run_dir, seed, name), ...])

One datamodule serves every member: the data options and batch size are shared. Each member
keeps its own batch order (its seed's, as alone; `ArrayDataModule.member_train_dataloader`),
augments its batch with its own strengths, and draws its initial weights from its own seed,
exactly as its single-trial run would. Its `max_epochs` and early stopping may be its own
(`MemberSpec.config`): it leaves the batch when they end it. Every member ends with what a
single trial leaves: `best.ckpt` (or `last.ckpt`) in the single-model checkpoint format,
`metrics.csv`, a W&B run, and test metrics from its kept state.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from regzoo.datamodules import ArrayDataModule, create_datamodule
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.population.members import MemberSpec
from regzoo.studies.population.module import Member, PopulationModule
from regzoo.studies.results import tracking
from regzoo.studies.trial.callbacks import SwallowedInterrupt
from regzoo.studies.trial.train import (
    SEED_ENV,
    TrialResult,
    data_facts,
    early_stopping,
    error_text,
    interruptible,
    nonfinite_reason,
    restored_environ,
    run_config,
    run_logger,
)
from regzoo.zoo import create_model, load_model
from regzoo.zoo.classifier import Classifier
from regzoo.zoo.population import StackedModels

# configure_optimizers returns None on purpose: StackedOptimizer steps in training_step.
NO_OPTIMIZER = ".*configure_optimizers.* returned `None`"


def train_population(
    cfg: StudyConfig,
    specs: list[MemberSpec],
    *,
    wandb_mode: str = "disabled",
    callbacks: list[L.Callback] | None = None,
) -> list[TrialResult]:
    """Train the members together; one `TrialResult` per member, in order.

    A member that diverges or is pruned ends alone (its result says so); an exception or Ctrl-C
    ends them all, every W&B run closed as failed with the error.
    """
    with restored_environ(SEED_ENV), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NO_OPTIMIZER)
        return _train(cfg, specs, wandb_mode, callbacks or [])


def _train(
    cfg: StudyConfig, specs: list[MemberSpec], wandb_mode: str, callbacks: list[L.Callback]
) -> list[TrialResult]:
    start = time.perf_counter()
    L.seed_everything(specs[0].seed, workers=True, verbose=False)
    _, shared_data, trainer_kw = split_params(cfg, specs[0].params)
    shared_data = {"split_seed": cfg.seed, **shared_data, "augment": None}
    dm = create_datamodule(cfg.data.name, seed=specs[0].seed, **shared_data)
    dm.prepare_data()
    dm.setup("fit")
    trainer_kw["max_epochs"] = max(_max_epochs(cfg, spec) for spec in specs)
    seeds = [spec.seed for spec in specs]
    members: list[Member] = []
    errors: dict[int, str] = {}
    try:
        for spec in specs:
            members.append(_member(cfg, spec, dm, trainer_kw, wandb_mode, len(specs)))
        stack = StackedModels([m.model for m in members])
        L.seed_everything(specs[0].seed, workers=True, verbose=False)
        val = _limited(dm.val_dataloader(), trainer_kw.pop("limit_val_batches", None))
        val = _regrouped(val, len(specs))
        module = PopulationModule(cfg, members, stack, dm, val)
        trainer = L.Trainer(
            **{k: v for k, v in trainer_kw.items() if v is not None},
            limit_val_batches=0,  # PopulationModule validates every member itself
            callbacks=[SwallowedInterrupt(), *callbacks],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        # Each member its own batch order, as alone (one loader when they share a seed).
        own = len(set(seeds)) > 1
        train = dm.member_train_dataloader(seeds) if own else dm.train_dataloader()
        interruptible(trainer, trainer.fit, module, train_dataloaders=train)
        results = [_result(cfg, m, dm) for m in members]
    except BaseException as exc:
        for i in range(len(members)):
            errors[i] = error_text(exc)
        _close(cfg, members, None, errors, start)
        raise
    _close(cfg, members, results, errors, start)
    return results


def _member(
    cfg: StudyConfig,
    spec: MemberSpec,
    dm: ArrayDataModule,
    trainer_kw: dict[str, Any],
    wandb_mode: str,
    size: int,
) -> Member:
    """Build one member as its single-trial run would: its seed, then its model."""
    model_kw, data_kw, _ = split_params(cfg, spec.params)
    own = spec.config or cfg
    trainer_kw = {**trainer_kw, "max_epochs": _max_epochs(cfg, spec)}
    L.seed_everything(spec.seed, workers=True, verbose=False)
    model = create_model(cfg.model.name, **data_facts(dm), **model_kw)
    model.pipeline.load_statistics(dm.input_statistics()[1])
    spec.run_dir.mkdir(parents=True, exist_ok=False)
    data_kw = {"split_seed": cfg.seed, **data_kw}
    config = run_config(
        own, spec.params, model, data_kw, trainer_kw, seed=spec.seed, trial=spec.trial
    )
    config["population"] = {"size": size}  # its batch order is its own seed's, as alone
    logger = run_logger(own, spec.run_name, config, mode=wandb_mode, concurrent=True)
    if spec.trial is not None:
        for key, value in tracking.run_attrs(logger).items():
            spec.trial.set_user_attr(key, value)
    return Member(
        spec=spec,
        model=model,
        augment=dm.augmenter_for(data_kw.get("augment")),
        csv=CSVLogger(spec.run_dir, name="", version=""),
        wandb=logger,
        early=early_stopping(own),
        max_epochs=trainer_kw["max_epochs"],
    )


def _limited(loader: Iterable[Any], limit: int | float | None) -> list[Any]:
    """The batches Lightning's `limit_val_batches` keeps: a count (int) or a share (float) of
    them, at least one; all with None."""
    batches = list(loader)
    if limit is None:
        return batches
    keep = limit if isinstance(limit, int) else max(1, int(len(batches) * limit))
    return batches[:keep]


# The most input values (members x samples x values per sample) one validation batch holds.
VAL_VALUES = 1 << 20


def _regrouped(batches: list[Any], members: int) -> list[Any]:
    """The validation samples in as few batches as `VAL_VALUES` allows (at least the loader's
    own): every member sees the same samples, and each batch costs a pass of Python and kernel
    launches that does not depend on its size (13 batches of 25 digits a member-epoch, where
    one holds them all). The sums the metrics are made of do not change, but for rounding."""
    if len(batches) < 2:
        return batches
    x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))
    size = max(len(batches[0][1]), VAL_VALUES // (members * x[0].numel()))
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def _max_epochs(cfg: StudyConfig, spec: MemberSpec) -> int:
    """The member's own `max_epochs`: its config's, else the population's with its params."""
    if spec.config is not None:
        return int(spec.config.trainer.max_epochs)
    return int(split_params(cfg, spec.params)[2]["max_epochs"])


def _result(cfg: StudyConfig, m: Member, dm: ArrayDataModule) -> TrialResult:
    """The member's result; its kept state written as a checkpoint and, unless it was pruned
    or diverged, tested."""
    path = m.spec.run_dir / ("last.ckpt" if cfg.checkpoint == "last" else "best.ckpt")
    if m.best_state is not None:
        m.model.load_state_dict(m.best_state)
        save_checkpoint(m.model, path, epoch=m.best_epoch or 0)
    value = m.best_score
    if value is None:
        value = m.last_metrics.get(cfg.objective.metric, math.nan)
    result = TrialResult(
        value=float(value),
        test={},
        epochs=m.epochs,
        checkpoint=path,
        tie_break=m.best_tie,
        pruned_at=m.pruned_at,
        nonfinite_at=m.nonfinite_at,
        nonfinite_metric=m.nonfinite_metric,
        params=m.spec.params,
    )
    if m.pruned_at is None and m.nonfinite_at is None and path.is_file():
        result.test = evaluate(load_model(path), dm)
    return result


def save_checkpoint(model: Classifier, path: Path, *, epoch: int) -> None:
    """`model` in the checkpoint format a single trial's `ModelCheckpoint` writes (what
    `load_model`, export and the report read), written whole or not at all."""
    checkpoint: dict[str, Any] = {
        "epoch": epoch,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "hyper_parameters": dict(model.hparams),
    }
    model.on_save_checkpoint(checkpoint)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(path)


@torch.no_grad()
def evaluate(model: Classifier, dm: ArrayDataModule) -> dict[str, float]:
    """`test/loss` and `test/acc` of a model on the test split, as `Classifier.test_step`
    computes them (the mean over samples of the batches' mean cross-entropy)."""
    model.eval()
    loss = correct = count = 0.0
    for x, y in dm.test_dataloader():
        logits = model(x)
        loss += float(F.cross_entropy(logits, y)) * len(y)
        correct += float((logits.argmax(-1) == y).sum())
        count += len(y)
    return {"test/loss": loss / count, "test/acc": correct / count}


def _close(
    cfg: StudyConfig,
    members: list[Member],
    results: list[TrialResult] | None,
    errors: dict[int, str],
    start: float,
) -> None:
    """Save each member's metrics.csv and finish its W&B run with its summary and state."""
    objective = cfg.objective
    for i, m in enumerate(members):
        m.csv.save()
        result = results[i] if results is not None else None
        summary: dict[str, Any] = {"epochs": m.epochs}
        state = "failed"
        if result is not None:
            summary |= {"best/" + objective.metric: result.value, **result.test}
            if result.tie_break is not None:
                summary[f"best/{objective.tie_break}"] = result.tie_break
            if result.pruned_at is not None:
                state, summary["pruned_at"] = "pruned", result.pruned_at
            elif result.nonfinite_at is not None:
                errors[i] = nonfinite_reason(result, objective.metric)
            else:
                state = "complete"
        if m.wandb is None:
            continue
        summary |= m.record.summary(
            objective.metric,
            objective.direction,
            tie_break=objective.tie_break,
            tie_max=objective.tie_break_maximize,
        )
        if cfg.checkpoint == "last":
            summary["best_epoch"] = max(m.epochs - 1, 0)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        if i in errors:
            summary["error"] = errors[i]
        tracking.finish(m.wandb, summary, state=state)
