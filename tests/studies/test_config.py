"""Config validation: every mistake is one line naming the key, exit 2, and nothing is stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from regzoo.studies import ConfigError, load_config
from regzoo.studies.cli.main import main
from regzoo.studies.config.search import split_params
from tests.conftest import DEFAULT_CONFIG, REPO

SHIPPED = sorted((REPO / "studies" / "configs").glob("*.yaml"))

# (override, words the one-line message must contain: the key first)
BAD = {
    "unknown top-level key": ("epochs=3", ["epochs", "unknown key"]),
    "unknown nested key": ("trainer.epochs=3", ["trainer.epochs", "unknown key"]),
    "unknown search option": ("search.model.lr={float: [0.1, 1], logg: true}", ["logg"]),
    "wrong type": ("trainer.max_epochs=many", ["trainer.max_epochs", "integer", "many"]),
    "wrong type of a section": ("pruner=median", ["pruner", "dictionary"]),
    "out of range": ("trials=0", ["trials", "greater than or equal to 1"]),
    "empty range": ("search.model.lr={float: [0.1, 0.1]}", ["search.model.lr", "empty"]),
    "inverted range": ("search.model.dropout={float: [0.5, 0.1]}", ["model.dropout", "inverted"]),
    "inverted int range": ("search.data.batch_size={int: [64, 16]}", ["data.batch_size"]),
    "NaN bound": ("search.model.lr={float: [.nan, 0.1]}", ["search.model.lr", "finite", "nan"]),
    "infinite bound": ("search.model.lr={float: [0.1, .inf]}", ["search.model.lr", "finite"]),
    "log of zero": ("search.model.lr={float: [0, 1], log: true}", ["model.lr", "positive low"]),
    "two kinds": ("search.model.lr={float: [0, 1], choice: [1]}", ["model.lr", "exactly one"]),
    "no choice": ("search.model.optimizer={choice: []}", ["model.optimizer", "at least one"]),
    "list choice": ("search.model.hidden={choice: [[8], [16]]}", ["model.hidden", "numbers"]),
    "unknown model": ("model.name=transformer", ["model.name", "transformer", "cnn"]),
    "unknown dataset": ("data.name=imagenet", ["data.name", "imagenet", "digits"]),
    "unknown pruner": ("pruner.name=asha", ["pruner.name", "asha", "median", "hyperband"]),
    "unknown sampler": ("sampler.name=bohb", ["sampler.name", "bohb", "tpe", "cmaes"]),
    "fixed hparam unknown": ("model.depth=3", ["model.depth", "allowed"]),
    "fixed hparam invalid": ("model.channels=[8, -1]", ["model", "channels"]),
    "data option unknown": ("data.shuffle=true", ["data.shuffle", "allowed"]),
    "search key names no hparam": ("search.model.depth={int: [1, 3]}", ["search.model.depth"]),
    "search key names no section": ("search.optimizer={choice: [sgd]}", ["search.optimizer"]),
    "search value invalid for the model": (
        "search.model.dropout={float: [0.0, 1.5]}",
        ["search.model.dropout=1.5", "dropout"],
    ),
    "when names a later key": (
        "search.model.l1={float: [0.1, 1], when: {model.zzz: 1}}",
        ["search.model.l1.when", "model.zzz"],
    ),
    "grid needs choices": ("sampler.name=grid", ["search.model.lr", "grid"]),
    "unknown regularization": (
        "search.model.regularization={choice: [none, dropout]}",
        ["search.model.regularization", "dropout", "weight_decay"],
    ),
    "regularization without a strength": (
        "search={model.regularization: {choice: [none, l1]}}",
        ["search.model.regularization", "'l1' has no strength"],
    ),
    "test metric as objective": ("objective.metric=test/acc", ["objective.metric", "test"]),
    "malformed --set": ("trainer.max_epochs", ["--set", "key=value"]),
}


@pytest.mark.parametrize("override, words", BAD.values(), ids=list(BAD))
def test_bad_config_exits_2_with_one_line_naming_the_key_and_stores_nothing(
    override: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "studies.db"
    args = ["run", str(DEFAULT_CONFIG), "--storage", f"sqlite:///{db}", "--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert (
        not db.exists()
        or not sqlite3.connect(db)
        .execute("select name from sqlite_master where name = 'studies'")
        .fetchall()
    )
    assert not (tmp_path / "runs").exists()


def test_set_overrides_any_key() -> None:
    cfg = load_config(
        DEFAULT_CONFIG,
        overrides=[
            "trials=7",
            "timeout=30",
            "trainer.max_epochs=3",
            "model.channels=[4, 8]",
            "data.augment.rotation=10",
            "sampler.name=random",
            "pruner={name: none}",
            "early_stopping=null",
            "wandb.project=mine",
            "search.model.lr={float: [0.001, 0.01], log: true}",
            "search.model.dropout=null",  # drops the dimension: the fixed value applies
            "model.dropout=0.25",
        ],
    )
    assert (cfg.trials, cfg.timeout, cfg.trainer.max_epochs) == (7, 30, 3)
    assert (cfg.sampler.name, cfg.pruner.name, cfg.early_stopping) == ("random", "none", None)
    assert cfg.wandb.project == "mine"
    assert cfg.search["model.lr"].float_ == (0.001, 0.01)
    assert "model.dropout" not in cfg.search
    model, data, trainer = split_params(cfg, {"model.lr": 0.005})
    assert model["channels"] == (4, 8) and model["dropout"] == 0.25 and model["lr"] == 0.005
    assert data["augment"] == {"rotation": 10} and trainer["max_epochs"] == 3


def test_a_missing_file_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem or path.stem == "default"
    assert cfg.search, "a shipped study searches something"


def test_a_whole_number_of_batches_stays_a_count_and_a_float_a_share() -> None:
    """Lightning reads `limit_val_batches=1` as one batch and `1.0` as all of them: the config
    must hand it the value as written (pydantic once turned the 1 into 1.0)."""
    from regzoo.studies.config.schema import TrainerSection

    assert TrainerSection(limit_val_batches=1).limit_val_batches == 1
    assert isinstance(TrainerSection(limit_val_batches=1).limit_val_batches, int)
    assert isinstance(TrainerSection(limit_val_batches=1.0).limit_val_batches, float)
    assert TrainerSection(limit_train_batches=0.25).limit_train_batches == 0.25
