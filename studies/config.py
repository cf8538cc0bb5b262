"""Study configuration: the YAML format of DESIGN.md, validated before anything runs.

    cfg = load_config("studies/configs/default.yaml", overrides=["trials=5"])

Every mistake is a `ConfigError` with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_STORAGE = "sqlite:///runs/studies.db"
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
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
    limit_train_batches: Annotated[float, Field(gt=0)] | None = None
    limit_val_batches: Annotated[float, Field(gt=0)] | None = None
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "64-true"] = "32-true"
    deterministic: bool = False

    @field_validator("limit_train_batches", "limit_val_batches")
    @classmethod
    def _fraction_or_count(cls, v: float | None) -> float | None:
        # Lightning's rule, checked at Trainer(): every trial would fail on it.
        if v is not None and v > 1 and v != int(v):
            raise ValueError("must be a fraction in (0, 1] or a whole number of batches")
        return v


class Objective(Strict):
    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, v: str) -> str:
        if not v.startswith("val/"):
            raise ValueError(
                "must be a validation metric (val/acc, val/loss): the test split "
                "is never used for model selection"
            )
        return v


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


class Wandb(Strict):
    project: str = "regzoo"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None


class Param(Strict):
    """One search dimension: exactly one of `float`, `int`, `choice`."""

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
    objective: Objective = Objective()
    early_stopping: EarlyStop | None = EarlyStop()
    pruner: Pruner = Pruner()
    sampler: Sampler = Sampler()
    search: dict[str, Param] = {}
    trials: Annotated[int, Field(ge=1, le=100_000)] = 20
    timeout: Annotated[float, Field(gt=0)] | None = None
    storage: str = DEFAULT_STORAGE
    # Trial n trains with seed + n: room left below numpy's 2**32 for 100_000 trials.
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    wandb: Wandb = Wandb()
    runs_dir: str = "runs"

    @property
    def study_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def load_config(path: str | Path, *, overrides: list[str] | None = None) -> StudyConfig:
    """Read, override (`key=value`, value parsed as YAML) and validate a study config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {_first_line(exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study config is a mapping of keys, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, source=str(path))


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b.c=value` sets raw[a][b][c]; under `search`, the rest of the path is one key.

    `search.<key>=null` removes that search dimension, so the config's fixed value applies.
    """
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. trainer.max_epochs=5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {_first_line(exc)}") from exc
    head, _, rest = key.partition(".")
    if head == "search" and rest and value is None:  # `--set search.model.lr=null` drops it
        if isinstance(raw.get("search"), dict):
            raw["search"].pop(rest, None)
        return
    parts = [head, rest] if head == "search" and rest else key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any], *, source: str = "config") -> StudyConfig:
    """Validate a raw mapping against the schema and the model/dataset registries."""
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    from studies._validate import check_references

    check_references(cfg, source=source)
    return cfg


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    loc = loc.replace("float_", "float").replace("int_", "int")
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return f"{loc or 'config'}: {msg}{shown}{more}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
