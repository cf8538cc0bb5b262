"""`regzoo ablate NAME`: what did each regularizer of the best configuration buy?

Each active regularizer of the study's best trial is switched off on its own, then all of them
together, and every variant is trained with the same seeds as the full configuration (those of
`regzoo confirm`, so its runs are reused). A regularizer's effect is the full configuration's
test metric minus the variant's, paired by seed, with a 95% interval: a positive effect on
test/acc means the regularizer helped.

Switching off: dropout to 0; the L1, L2 or decoupled-decay penalty to 0; each augmentation
strength to 0 (flip to none); early stopping off, which also keeps the last epoch's weights
instead of the best one's (picking the best epoch on validation data is early stopping too).

    regzoo ablate fnn-mnist1d --seeds 5
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.config.search import split_params
from regzoo.studies.loop.read import complete_trials, ranked_trials
from regzoo.studies.verdicts.stats import Paired
from regzoo.studies.verdicts.store import (
    ABLATE_ATTR,
    Point,
    SeededRuns,
    VerdictError,
    compare,
    finished_runs,
    read_request,
    run_seeds,
    stored_config,
)
from regzoo.zoo import model_hparams

FULL = "full"
ALL_OFF = "all off"
PENALTIES = ("l1", "l2", "weight_decay")
AUGMENTATIONS = ("rotation", "zoom", "shift", "noise", "flip")
EARLY_STOPPING = "early stopping"


@dataclass(frozen=True)
class Regularizer:
    """An active regularizer: its name, its setting in the full configuration, and the
    parameters (or config changes) that switch it off."""

    name: str
    setting: str
    params: dict[str, Any]
    config: dict[str, Any]


def active_regularizers(cfg: StudyConfig, params: dict[str, Any]) -> list[Regularizer]:
    """The regularizers on in `cfg` with `params` applied, in a fixed order."""
    model, data, _ = split_params(cfg, params)
    defaults = {
        k: p.default
        for k, p in model_hparams(cfg.model.name).items()
        if p.default is not inspect.Parameter.empty
    }
    found = []
    value = model.get("dropout", defaults.get("dropout", 0.0))
    if isinstance(value, int | float) and value > 0:
        found.append(Regularizer("dropout", f"p={value:.3g}", {"model.dropout": 0.0}, {}))
    for penalty in PENALTIES:
        value = model.get(penalty, defaults.get(penalty, 0.0))
        if isinstance(value, int | float) and value > 0:
            found.append(Regularizer(penalty, f"{value:.3g}", {f"model.{penalty}": 0.0}, {}))
    augment = data.get("augment") or {}
    if augment.get("p", 1.0) > 0:
        for key in AUGMENTATIONS:
            value = augment.get(key)
            if key == "flip" and value not in (None, "none"):
                found.append(Regularizer("flip", str(value), {"data.augment.flip": "none"}, {}))
            elif key != "flip" and isinstance(value, int | float) and value > 0:
                found.append(Regularizer(key, f"{value:.3g}", {f"data.augment.{key}": 0.0}, {}))
    if cfg.early_stopping is not None or cfg.checkpoint == "best":
        es = cfg.early_stopping
        setting = f"patience {es.patience} on {es.monitor}" if es else "best epoch kept"
        off = {"early_stopping": None, "checkpoint": "last"}
        found.append(Regularizer(EARLY_STOPPING, setting, {}, off))
    return found


def variant(
    cfg: StudyConfig, params: dict[str, Any], off: list[Regularizer]
) -> tuple[StudyConfig, dict[str, Any]]:
    """The configuration with the regularizers `off` switched off."""
    changes: dict[str, Any] = {}
    new_params = dict(params)
    for r in off:
        new_params.update(r.params)
        changes.update(r.config)
    return (cfg.model_copy(update=changes) if changes else cfg), new_params


@dataclass(frozen=True)
class Effect(SeededRuns):
    """One row of an ablation: a variant (or the full configuration) and its runs, by seed."""

    variant: str = FULL
    setting: str = ""


@dataclass(frozen=True)
class Ablation:
    """A finished ablation of one trial's configuration: the full runs and each variant's."""

    study: str
    trial: int
    seeds: list[int]
    full: Effect
    variants: list[Effect]

    def effect(self, row: Effect, metric: str = "test/acc") -> Paired:
        """Full minus variant over the seeds where both completed: what the regularizer bought."""
        return compare(self.full, row, self.seeds, metric)


def plan(
    study: optuna.Study, n_seeds: int, trial: int | None = None
) -> tuple[StudyConfig, FrozenTrial, list[Point], dict[str, Any]]:
    """The runs an ablation of the study's best trial needs (of trial `trial`, which must be
    complete: `--trial N`), and the request to record."""
    cfg = stored_config(study)
    ranked = ranked_trials(study)
    if not ranked:
        raise VerdictError(
            f"study {study.study_name!r} has no complete trial to ablate yet; run it first"
        )
    best = ranked[0] if trial is None else complete_trials(study, [trial], option="--trial")[0]
    active = active_regularizers(cfg, dict(best.params))
    if not active:
        raise VerdictError(
            f"trial {best.number} of {study.study_name!r} uses no regularizer (dropout 0, no "
            "l1/l2/weight_decay, no augmentation, no early stopping): nothing to switch off"
        )
    seeds = run_seeds(cfg, n_seeds)
    rows: list[tuple[str, str, list[Regularizer]]] = [(FULL, "as tuned", [])]
    rows += [(f"no {r.name}", r.setting, [r]) for r in active]
    if len(active) > 1:
        rows.append((ALL_OFF, ", ".join(r.name for r in active), active))
    planned: list[Point] = []
    recorded: list[dict[str, Any]] = []
    for name, setting, off in rows:
        v_cfg, v_params = variant(cfg, dict(best.params), off)
        runs = {}
        for seed in seeds:
            point = Point(
                f"trial {best.number} {name}",
                v_cfg,
                v_params,
                seed,
                {"source_trial": best.number, "variant": name},
            )
            planned.append(point)
            runs[str(seed)] = point.fingerprint
        recorded.append({"variant": name, "setting": setting, "runs": runs})
    request = {"trial": best.number, "seeds": seeds, "rows": recorded}
    return cfg, best, planned, request


def read_ablation(study: optuna.Study, companion: optuna.Study | None) -> Ablation | None:
    """The last finished ablation of the study, or None."""
    request = read_request(study, ABLATE_ATTR)
    if request is None or companion is None:
        return None
    done = finished_runs(companion)
    effects = [
        Effect(
            {int(s): done[fp] for s, fp in row["runs"].items() if fp in done},
            row["variant"],
            row["setting"],
        )
        for row in request["rows"]
    ]
    seeds = [int(s) for s in request["seeds"]]
    return Ablation(study.study_name, int(request["trial"]), seeds, effects[0], effects[1:])
