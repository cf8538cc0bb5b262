"""The study config's schema (docs/design.md, "Study configs"): pydantic models, no I/O.

`regzoo.studies.config.load` reads and validates a YAML file against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

from regzoo._checks import UserError

DEFAULT_STORAGE = (
    "sqlite:///runs/studies.db"  # also the CLI's (cli/main.py, without importing this)
)
MAX_SEED = 2**32 - 1


class ConfigError(UserError):
    """A user's mistake in a study config: one line, shown without a traceback."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Named(BaseModel):
    """`{name: ..., **options}`: the options are checked against the named thing's signature."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainerSection(Strict):
    max_epochs: Annotated[int, Field(ge=1, le=1_000_000)] = 40
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    # Lightning reads an int as a count of batches and a float as a share: `1` is one batch,
    # `1.0` all of them, so a whole number stays an int (StrictInt: 1.0 is not turned into 1).
    limit_train_batches: (
        Annotated[StrictInt, Field(ge=1)] | Annotated[float, Field(gt=0)] | None
    ) = None
    limit_val_batches: Annotated[StrictInt, Field(ge=1)] | Annotated[float, Field(gt=0)] | None = (
        None
    )
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "64-true"] = "32-true"
    deterministic: bool = False

    @field_validator("limit_train_batches", "limit_val_batches")
    @classmethod
    def _fraction_or_count(cls, v: float | None) -> float | None:
        # Lightning's rule, checked at Trainer(): every trial would fail on it.
        if isinstance(v, float) and v > 1 and v != int(v):
            raise ValueError("must be a fraction in (0, 1] or a whole number of batches")
        return v


# Objectives other than a validation metric, measured once per run (multi-objective studies).
RUN_OBJECTIVES = ("model/params", "run/seconds")


class Objective(Strict):
    """What trials are ranked by: `metric` in `direction`, then `tie_break` among equal values.

    `tie_break` matters where the metric saturates (a validation accuracy of 0.9965 on 287
    samples is one error, and many trials reach it): `val/loss` under `val/acc` picks, among
    equally accurate epochs and trials, the most confident one. Its direction follows its name
    (`acc`: higher is better, anything else: lower is better).

    In a list of objectives (a multi-objective study), a later one may also be a run's
    `model/params` (its parameter count) or `run/seconds` (its training time), known once per
    run rather than per epoch; the first picks each run's kept epoch, so it is `val/...`.
    """

    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] = "maximize"
    tie_break: str | None = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if not v.startswith("val/") and v not in RUN_OBJECTIVES:
            raise ValueError(
                f"must be a validation metric (val/acc, val/loss) or one of "
                f"{', '.join(RUN_OBJECTIVES)}: the test split is never used for model selection"
            )
        return v

    @field_validator("tie_break")
    @classmethod
    def _validation_metric(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("val/"):
            raise ValueError(
                "must be a validation metric (val/acc, val/loss): the test split "
                "is never used for model selection"
            )
        return v

    @model_validator(mode="after")
    def _distinct(self) -> Objective:
        if self.tie_break == self.metric:
            raise ValueError(f"tie_break must differ from metric ({self.metric})")
        return self

    @property
    def tie_break_maximize(self) -> bool:
        """Whether a higher `tie_break` value is better (accuracies), else lower (losses)."""
        return bool(self.tie_break and self.tie_break.endswith("acc"))


def objectives_of(objective: Objective | list[Objective]) -> list[Objective]:
    """A config's `objective` section as a list: one mapping is a list of one."""
    return objective if isinstance(objective, list) else [objective]


class EarlyStop(Strict):
    monitor: str = "val/loss"
    patience: Annotated[int, Field(ge=1)] = 5
    mode: Literal["min", "max"] | None = None
    min_delta: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("monitor")
    @classmethod
    def _validation_metric(cls, v: str) -> str:
        if not v.startswith("val/"):
            raise ValueError("must be a validation metric such as val/loss or val/acc")
        return v

    @property
    def resolved_mode(self) -> str:
        return self.mode or ("max" if self.monitor.endswith("acc") else "min")


class Pruner(Strict):
    name: Literal["median", "hyperband", "none"] = "hyperband"
    n_startup_trials: Annotated[int, Field(ge=0)] = 5
    n_warmup_steps: Annotated[int, Field(ge=0)] = 3
    min_resource: Annotated[int, Field(ge=1)] = 1
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class Sampler(Strict):
    name: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = 0  # numpy's 32-bit seeds


class Confirm(Strict):
    """`regzoo confirm` after the search: the top `top` trials' configurations retrained with
    `seeds` new seeds each (docs/verdicts.md)."""

    top: Annotated[int, Field(ge=1, le=20)] = 2
    seeds: Annotated[int, Field(ge=2, le=100)] = 5


class Population(Strict):
    """`population: {size: K}`: the sampler's trials trained K at a time as one batched model
    (docs/populations.md); 1 trains one trial per Trainer."""

    size: Annotated[int, Field(ge=1, le=1024)] = 1


class Wandb(Strict):
    project: str = "regzoo"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None


class Param(Strict):
    """One search dimension: exactly one of `float`, `int`, `choice`."""

    # A study stores its config by field name (`float_`): read back by either name.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    float_: tuple[float, float] | None = Field(None, alias="float")
    int_: tuple[int, int] | None = Field(None, alias="int")
    choice: list[Any] | None = None
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None
    when: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        kinds = [k for k in ("float_", "int_", "choice") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of float: [low, high], int: [low, high], choice: [...]"
            )
        bounds = self.float_ or self.int_
        if bounds is not None:
            low, high = bounds
            if not low < high:
                raise ValueError(f"range [{low}, {high}] is empty or inverted; need low < high")
            if self.log and low <= 0:
                raise ValueError(f"log: true needs a positive low bound, got {low}")
            if self.log and self.step is not None:
                raise ValueError("log and step cannot be combined")
        elif not self.choice:
            raise ValueError("choice needs at least one value")
        elif not all(c is None or isinstance(c, bool | int | float | str) for c in self.choice):
            raise ValueError(
                "choice values must be numbers, strings, booleans or null (Optuna stores them); "
                f"got {self.choice!r}: to compare architectures, make them separate configs"
            )
        elif self.log or self.step is not None:
            raise ValueError("log and step apply to float and int ranges, not choice")
        return self


class StudyConfig(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.-]*$")]
    model: Named
    data: Named
    trainer: TrainerSection = TrainerSection()
    # One mapping, or a list of them for a multi-objective study (docs/studies.md).
    objective: Annotated[
        Annotated[Objective, Tag("one")] | Annotated[list[Objective], Tag("list")],
        Discriminator(lambda v: "list" if isinstance(v, list) else "one"),
    ] = Objective()
    early_stopping: EarlyStop | None = EarlyStop()
    pruner: Pruner = Pruner()
    sampler: Sampler = Sampler()
    search: dict[str, Param] = {}
    trials: Annotated[int, Field(ge=1, le=100_000)] = 20
    timeout: Annotated[float, Field(gt=0)] | None = None
    storage: str = DEFAULT_STORAGE
    # Which epoch's weights a trial keeps and tests: the best by the objective on validation
    # data (itself a form of early stopping), or the last one trained.
    checkpoint: Literal["best", "last"] = "best"
    confirm: Confirm | None = None
    population: Population = Population()
    # Trial n trains with seed + n: room left below numpy's 2**32 for 100_000 trials.
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    wandb: Wandb = Wandb()
    runs_dir: str = "runs"

    @property
    def study_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def objectives(self) -> list[Objective]:
        """Every objective, the first picking each run's kept epoch."""
        return objectives_of(self.objective)

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.objective, list)

    @model_validator(mode="after")
    def _objectives(self) -> StudyConfig:
        """What Optuna's multi-objective optimization supports, and a first objective that can
        pick an epoch; each refusal names the key and what is allowed."""
        goals = self.objectives
        if not goals:
            raise ValueError("objective: an empty list; give one {metric, direction} or more")
        where = "objective.0" if self.multi_objective else "objective"
        if not goals[0].metric.startswith("val/"):
            raise ValueError(
                f"{where}.metric: {goals[0].metric!r} cannot pick a run's kept epoch; the "
                "first objective is a validation metric (val/acc, val/loss)"
            )
        metrics = [g.metric for g in goals]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objective: a metric listed twice in {metrics}; list each once")
        if not self.multi_objective:
            return self
        if any(g.tie_break for g in goals):
            raise ValueError(
                "objective: tie_break is single-objective only (a list ranks trials by "
                "their Pareto front); remove tie_break or give one objective mapping"
            )
        if self.pruner.name != "none":
            raise ValueError(
                f"pruner.name: {self.pruner.name!r} cannot prune a multi-objective study "
                "(Optuna reports one value per epoch); set pruner: {name: none}"
            )
        if self.sampler.name == "cmaes":
            raise ValueError(
                "sampler.name: 'cmaes' is single-objective only; with a list of objectives "
                "use tpe, random or grid"
            )
        return self
