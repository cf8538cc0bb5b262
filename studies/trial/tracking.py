"""Weights & Biases tracking: one run per trial, offline unless a login is configured.

A missing API key never prompts: runs are written offline under `runs/wandb/` and
`wandb sync` uploads them later.

A trial's run (the layout the study-level run and the workspace rely on):

- config: `trial` (int), `study`, `model` ({name, every hparam of the built model}), `data`
  ({name, every data option as used}), `trainer` (the Trainer options as used), `seed`,
  `objective` ({metric, direction, tie_break where set}), `checkpoint`, `sampler`, `pruner`,
  `n_parameters` (trainable), `searched` (the sampled keys, dotted paths into this config).
  Nothing else: the model saves its hyperparameters with `logger=False`, so Lightning adds no
  top-level copies.
- tags: the study name from the start; the final state (`complete`, `pruned`, `failed`) added
  at the end.
- metrics: `epoch` is the step of every `train/*`, `val/*` and `test/*` metric (Lightning's
  `trainer/global_step` is still logged, as a plain column). The run is created here, not by
  Lightning's WandbLogger, so its `define_metric("*", step_metric="trainer/global_step")` is
  never made and ours are the only definitions.
- summary: `state`, `best/<objective>`, `val/acc` (max over epochs), `val/loss` (min), the
  objective metric at its best, the test metrics, `epochs`, `best_epoch` (0-based, as
  Lightning counts epochs), `seconds`, and `pruned_at` / `error` when they apply.
"""

from __future__ import annotations

import math
import netrc
import os
from pathlib import Path
from typing import Any, Literal, cast

from lightning.pytorch.loggers import WandbLogger

MODES = ("online", "offline", "disabled")
STATES = ("complete", "pruned", "failed")
STEP = "epoch"  # the x axis of every per-epoch metric
STAGES = ("train", "val", "test")
# Summarised by their best epoch rather than their last: max or min.
BEST_OF = {"val/acc": "max", "val/loss": "min"}
RUN_ID_ATTR = "wandb_run_id"  # Optuna user attrs of a tracked trial
RUN_URL_ATTR = "wandb_url"  # online runs only


def has_login() -> bool:
    """True when an API key is in the environment or ~/.netrc (as `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(requested: str | None) -> str:
    """The mode to use: the request, else WANDB_MODE, else online with a login, else offline."""
    if requested:
        return requested
    env = os.environ.get("WANDB_MODE")
    if env in MODES:
        return "online" if env == "online" and has_login() else env
    if env == "dryrun":
        return "offline"
    return "online" if has_login() else "offline"


def summaries(metric: str, direction: str) -> dict[str, str]:
    """How each best-of metric is summarised: `val/acc` max, `val/loss` min, the objective in
    its direction (both, comma-separated, for an objective against its metric's grain)."""
    out = dict(BEST_OF)
    best = "max" if direction == "maximize" else "min"
    out[metric] = best if out.get(metric, best) == best else f"{out[metric]},{best}"
    return out


VERDICT_JOBS = ("confirm", "ablate")  # run names `<kind>-<n>` (regzoo.studies.verdicts.run)


def job_type_of(run_name: str) -> str:
    """A run's W&B job type from its name: a verdict's runs apart from the study's trials."""
    kind = run_name.partition("-")[0]
    return kind if kind in VERDICT_JOBS else "trial"


def make_logger(
    *,
    mode: str,
    project: str,
    entity: str | None,
    group: str,
    name: str,
    config: dict[str, Any],
    tags: list[str],
    objective: tuple[str, str],
    save_dir: Path,
    job_type: str = "trial",
    concurrent: bool = False,
) -> WandbLogger | None:
    """A WandbLogger over a new run for one trial, its metrics defined; None when disabled.

    `objective` is the objective's (metric, direction); `job_type` is `trial`, or `confirm` /
    `ablate` for a verdict's run (`job_type_of`). `concurrent` runs stay open beside each
    other (a population's members); otherwise a new run finishes the process's previous one.
    """
    if mode == "disabled":
        return None
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        name=name,
        config=config,
        tags=tags,
        # Absolute: wandb's service process resolves a relative path against the directory it
        # started in, and writes nothing when the process has changed directory since.
        dir=str(save_dir.resolve()),
        mode=cast(Literal["online", "offline"], mode),
        job_type=job_type,
        reinit="create_new" if concurrent else "finish_previous",
        # The run's own settings, not WANDB_* variables: the process keeps its environment.
        settings=wandb.Settings(silent=True, console="off"),
    )
    define_metrics(run, *objective)
    # Given the run, the logger neither starts one nor defines `*` against its global step.
    return WandbLogger(experiment=run)


def define_metrics(run: Any, metric: str, direction: str) -> None:
    """`epoch` as the step of every per-epoch metric; best-of summaries (see `summaries`)."""
    run.define_metric(STEP)
    for stage in STAGES:
        run.define_metric(f"{stage}/*", step_metric=STEP)
    for name, summary in summaries(metric, direction).items():
        run.define_metric(name, step_metric=STEP, summary=summary)


def run_attrs(logger: WandbLogger | None) -> dict[str, str]:
    """What a trial records about its run: the id, and the URL when the run is online."""
    if logger is None:
        return {}
    run = logger.experiment
    attrs = {RUN_ID_ATTR: str(run.id)}
    if not run.offline and run.url:  # `url` warns on an offline run
        attrs[RUN_URL_ATTR] = str(run.url)
    return attrs


class EpochRecord:
    """The validation metrics of each epoch, as a run's lifecycle takes them: the run's
    best-of summary values."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}

    def summary(
        self, metric: str, direction: str, *, tie_break: str | None = None, tie_max: bool = False
    ) -> dict[str, Any]:
        """`val/acc` max and `val/loss` min over the epochs, the objective's metric at its best,
        and `best_epoch`: the first epoch of the objective's best value (0-based; among equal
        values, the one with the best `tie_break` metric, as the checkpoint keeps). NaN and
        infinite values are skipped: a summary is None when no epoch had a finite value."""
        out: dict[str, Any] = {}
        for name in summaries(metric, direction):
            values = [m[name] for m in self.epochs.values() if name in m]
            finite = [v for v in values if math.isfinite(v)]
            how = BEST_OF.get(name, "max" if direction == "maximize" else "min")
            if values:
                out[name] = (max if how == "max" else min)(finite) if finite else None
        scored = [
            (epoch, m[metric])
            for epoch, m in sorted(self.epochs.items())
            if math.isfinite(m.get(metric, math.nan))
        ]
        if scored:
            sign = 1 if direction == "maximize" else -1
            tie_sign = 1 if tie_max else -1

            def rank(em: tuple[int, float]) -> tuple[float, float, int]:
                tie = self.epochs[em[0]].get(tie_break, math.nan) if tie_break else math.nan
                return sign * em[1], tie_sign * tie if math.isfinite(tie) else -math.inf, -em[0]

            out["best_epoch"] = max(scored, key=rank)[0]
        return out


def finish(logger: WandbLogger | None, summary: dict[str, Any], *, state: str) -> None:
    """Write the final metrics and the trial's `state` to the run's summary, tag the run with
    the state, close the run.

    A failed trial also closes its run with exit code 1, so W&B shows it as failed, not finished.
    """
    if logger is None:
        return
    run = logger.experiment
    for key, value in {**summary, "state": state}.items():
        run.summary[key] = value
    run.tags = (*run.tags, state)
    run.finish(exit_code=1 if state == "failed" else 0)


def sync_command(save_dir: Path) -> str:
    return f"wandb sync {save_dir / 'wandb'}/offline-run-*"


def plain(value: Any) -> Any:
    """`value` as JSON-like data for a run's config: tuples as lists, other objects as text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
