"""Read a study config: YAML, `--set` overrides, the schema, then the registries.

    cfg = load_config("studies/configs/default.yaml", overrides=["trials=5"])

Every mistake is a `ConfigError` with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from regzoo._checks import one_line
from regzoo._dicts import set_dotted
from regzoo.studies.config.schema import ConfigError, StudyConfig
from regzoo.studies.config.validate import check_references


def load_config(path: str | Path, *, overrides: list[str] | None = None) -> StudyConfig:
    """Read, override (`key=value`, value parsed as YAML) and validate a study config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {one_line(exc, lines=1)}") from exc
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
        raise ConfigError(
            f"--set {item!r}: value is not valid YAML: {one_line(exc, lines=1)}"
        ) from exc
    head, _, rest = key.partition(".")
    if head == "search" and rest and value is None:  # `--set search.model.lr=null` drops it
        if isinstance(raw.get("search"), dict):
            raw["search"].pop(rest, None)
        return
    parts = [head, rest] if head == "search" and rest else key.split(".")
    try:
        set_dotted(raw, parts, value)
    except ValueError as exc:
        raise ConfigError(f"--set {item!r}: {exc}") from None


def validate_config(raw: dict[str, Any], *, source: str = "config") -> StudyConfig:
    """Validate a raw mapping against the schema and the model/dataset registries."""
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    check_references(cfg, source=source)
    return cfg


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    if parts[:1] == ["objective"]:  # the schema's tags of a mapping or a list of objectives
        parts = [parts[0], *parts[2:]]
    loc = ".".join(parts)
    loc = loc.replace("float_", "float").replace("int_", "int")
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{shown}{more}" if loc else f"{msg}{more}"  # a whole-config check
