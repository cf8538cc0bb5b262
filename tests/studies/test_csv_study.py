"""A study on a user's CSV table: `regzoo run` with string labels, `regzoo export` to a hub
folder, and the exported model naming the classes of raw rows read from the file; each bad
table refused by the CLI in one line, exit code 2, before anything is written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from regzoo.datamodules import create_datamodule
from regzoo.studies.cli.main import main
from regzoo.zoo import load_model
from tests.datamodules.conftest import write_iris

STUDY = """\
name: iris
model: {name: fnn, hidden: [16], optimizer: adam, lr: 0.02}
data: {name: csv, path: tables/iris.csv, target: species, drop: [id], normalize: standard}
trainer: {max_epochs: 3, limit_train_batches: 3}
search:
  model.lr: {float: [0.005, 0.05], log: true}
trials: 2
"""
QUIET = ["--wandb", "disabled", "--no-progress"]


def write_study(root: Path) -> Path:
    """iris with an `id` column (dropped by the config) under tables/, the config under
    configs/: the relative `path` is read from the current folder, not the config's."""
    (root / "tables").mkdir()
    write_iris(root / "iris-plain.csv")
    with (root / "iris-plain.csv").open(encoding="utf-8") as src:
        rows = list(csv.reader(src))
    with (root / "tables" / "iris.csv").open("w", newline="", encoding="utf-8") as dst:
        csv.writer(dst).writerows([["id", *rows[0]], *[[i, *r] for i, r in enumerate(rows[1:])]])
    (root / "configs").mkdir()
    config = root / "configs" / "iris.yaml"
    config.write_text(STUDY, encoding="utf-8")
    return config


def raw_rows(path: Path, features: list[str]) -> tuple[torch.Tensor, list[str]]:
    """The cells of `features` of every row as a user would read them (no scaling), and the
    labels."""
    with path.open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    x = torch.tensor([[float(row[f]) for f in features] for row in rows], dtype=torch.float32)
    return x, [row["species"] for row in rows]


def test_string_labels_round_trip_from_the_table_to_an_exported_models_predictions(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_study(in_tmp)
    assert main(["run", str(config), *QUIET]) == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="iris", storage="sqlite:///runs/studies.db")
    best = study.best_trial
    assert main(["export", "iris", "--format", "hub", "--out", "iris-model"]) == 0

    model = load_model(in_tmp / "iris-model")
    names = model.hparams["class_names"]
    assert list(names) == ["setosa", "versicolor", "virginica"]
    # The model says which columns it reads, in which order (the file's, `id` dropped).
    features = model.input_description()["feature_names"]
    assert features == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    card = (in_tmp / "iris-model" / "README.md").read_text()
    assert "features, in input order: `sepal_length`, `sepal_width`, `petal_length`" in card
    x, labels = raw_rows(in_tmp / "tables" / "iris.csv", features)
    with torch.no_grad():
        predicted = [names[i] for i in model(x).argmax(-1).tolist()]
    assert set(predicted) <= set(names)
    # The test rows, raw and named: the accuracy the study recorded for its best trial.
    dm = create_datamodule("csv", path="tables/iris.csv", target="species", drop=["id"])
    dm.setup()
    test = dm.split_indices["test"]
    hits = np.array(predicted)[test] == np.array(labels)[test]
    assert hits.mean() == pytest.approx(best.user_attrs["test/acc"], abs=1e-6)


# a mistake in the table, given as --set overrides, and what the one line must say
BAD: dict[str, tuple[str, list[str], str]] = {
    "missing file": ("", ["data.path=tables/none.csv"], "path='tables/none.csv' is not a file"),
    "missing target": (
        "",
        ["data.target=kind"],
        "target='kind' is not a column of path='tables/iris.csv'; allowed: one of its columns "
        "id, sepal_length, sepal_width, petal_length, petal_width, species",
    ),
    "no numeric feature": (
        "",
        ["data.drop=[id, sepal_length, sepal_width, petal_length, petal_width]"],
        "no feature column besides target 'species'",
    ),
    "a class too small": (
        "150,5.0,3.0,1.5,0.2,bonsai\n",
        [],
        "class 'bonsai' has 1 row(s); allowed: at least 3 rows in every class",
    ),
    "empty file": ("EMPTY", [], "path='tables/iris.csv' is empty"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_table_is_one_line_and_exit_2_before_anything_is_written(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    config = write_study(in_tmp)
    append, overrides, message = BAD[case]
    table = in_tmp / "tables" / "iris.csv"
    if append == "EMPTY":
        table.write_text("", encoding="utf-8")
    elif append:
        with table.open("a", encoding="utf-8") as file:
            file.write(append)
    sets = [arg for item in overrides for arg in ("--set", item)]
    assert main(["run", str(config), *QUIET, *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert message in err
    assert not (in_tmp / "runs").exists()
