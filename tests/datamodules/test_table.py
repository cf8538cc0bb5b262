"""`csv`: a user's table by path and target column. Real files written here; the file is read
back with numpy alone to check what the datamodule serves and fits."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regzoo._normalize import fit_statistics
from regzoo.datamodules import create_datamodule
from regzoo.datamodules.table import CsvTable

# Three classes of different sizes (stratification shows), labelled by name.
SIZES = {"oak": 60, "ash": 30, "elm": 15}
COLUMNS = ["id", "height", "girth", "site", "leaf", "kind"]


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def trees(tmp_path: Path) -> Path:
    """105 trees: an id, three measurements on different scales, a site name, the kind."""
    rng = np.random.default_rng(0)
    rows = []
    for k, (kind, n) in enumerate(SIZES.items()):
        for _ in range(n):
            height, girth, leaf = rng.normal([10 + 5 * k, 100 * (k + 1), 0.1 * k], [2, 30, 0.05])
            rows.append([len(rows), height, girth, f"site-{len(rows) % 4}", leaf, kind])
    return write_csv(tmp_path / "trees.csv", COLUMNS, rows)


def tree_table(path: Path, **options: Any) -> CsvTable:
    dm = create_datamodule("csv", path=path, target="kind", drop=["id", "site"], **options)
    assert isinstance(dm, CsvTable)
    return dm


def file_features(path: Path) -> np.ndarray:
    """The feature columns height, girth, leaf, read with numpy alone."""
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2, 4))


def file_labels(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=5, dtype=str)


def test_features_are_the_kept_columns_in_file_order_and_labels_the_sorted_names(
    trees: Path,
) -> None:
    dm = tree_table(trees)
    assert dm.feature_names == ("height", "girth", "leaf")
    assert dm.input_shape == (3,) and dm.num_classes == 3
    assert dm.class_names == ("ash", "elm", "oak")
    dm.setup()
    names = np.array(dm.class_names)
    for split, (x, y) in dm.splits.items():
        index = dm.split_indices[split]
        np.testing.assert_allclose(x.numpy(), file_features(trees)[index], rtol=1e-6)
        assert (names[y.numpy()] == file_labels(trees)[index]).all()


def test_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = [[i, label] for label in ("10", "2", "1") for i in range(5)]
    path = write_csv(tmp_path / "t.csv", ["x", "grade"], rows)
    assert create_datamodule("csv", path=path, target="grade").class_names == ("1", "2", "10")


def test_the_split_is_stratified_and_fixed_across_run_seeds(trees: Path) -> None:
    """A study passes its seed as `split_seed` and each run its own `seed`: every run sees the
    same rows in each split; the test rows move with no seed at all."""
    runs = [tree_table(trees, seed=seed, split_seed=7) for seed in (1, 2, 3)]
    other_study = tree_table(trees, seed=1, split_seed=8)
    for dm in (*runs, other_study):
        dm.setup()
    for split in ("train", "val", "test"):
        for dm in runs[1:]:
            assert np.array_equal(dm.split_indices[split], runs[0].split_indices[split])
    assert np.array_equal(other_study.split_indices["test"], runs[0].split_indices["test"])
    assert not np.array_equal(other_study.split_indices["val"], runs[0].split_indices["val"])
    y = runs[0].table.y
    whole = np.bincount(y) / len(y)
    for split, index in runs[0].split_indices.items():
        share = np.bincount(y[index], minlength=3) / len(index)
        # stratified: each class's share as in the file, up to one row's rounding per class
        assert np.all(np.abs(share - whole) <= 1 / len(index)), (split, share, whole)


@pytest.mark.parametrize("kind", ["minmax", "standard", "pca"])
def test_normalization_is_fitted_on_the_training_rows_only(trees: Path, kind: str) -> None:
    dm = tree_table(trees, normalize=kind)
    got_kind, stats = dm.input_statistics()
    assert got_kind == kind
    x = file_features(trees)
    on_train = fit_statistics(kind, x[dm.split_indices["train"]])
    on_all = fit_statistics(kind, x)
    for key, value in stats.items():
        np.testing.assert_allclose(value, on_train[key], rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(stats[key], on_all[key], rtol=1e-3) for key in stats)


def test_a_relative_path_is_read_from_the_current_folder(
    trees: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tree_table(Path("trees.csv")).num_classes == 3
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"path='trees.csv' is not a file \(.*elsewhere"):
        tree_table(Path("trees.csv"))


def test_a_file_changed_since_it_was_read_is_read_again(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["x", "label"], [[i, "ab"[i % 2]] for i in range(20)])
    assert create_datamodule("csv", path=path, target="label").class_names == ("a", "b")
    write_csv(path, ["x", "label"], [[i, "cde"[i % 3]] for i in range(30)])
    assert create_datamodule("csv", path=path, target="label").class_names == ("c", "d", "e")


HEADER = "a,b,label\n"
GOOD_ROWS = "".join(f"{i},{i % 7},{'xy'[i % 2]}\n" for i in range(20))

# file text, options, what the message must say
BAD_FILES: dict[str, tuple[str | None, dict[str, Any], str]] = {
    "missing file": (None, {}, r"path='.*' is not a file.*allowed: a CSV file"),
    "missing target": (
        HEADER + GOOD_ROWS,
        {"target": "kind"},
        r"target='kind' is not a column of .*allowed: one of its columns a, b, label$",
    ),
    "no numeric feature": (
        "name,label\n" + "".join(f"n{i},{'xy'[i % 2]}\n" for i in range(20)),
        {"drop": ["name"]},
        r"no feature column besides target 'label' and drop \['name'\]; allowed: at least one",
    ),
    "a text column": (
        "a,name,label\n" + "".join(f"{i},n{i},{'xy'[i % 2]}\n" for i in range(20)),
        {},
        r"column 'name' holds 'n0' on line 2; allowed: .*or drop: \[name\]",
    ),
    "an empty cell": (
        HEADER + GOOD_ROWS + "3,,x\n",
        {},
        r"column 'b' holds an empty cell on line 22; allowed: a finite number",
    ),
    "nan": (HEADER + GOOD_ROWS + "nan,1,x\n", {}, r"column 'a' holds 'nan' on line 22"),
    "a class too small": (
        HEADER + GOOD_ROWS + "1,2,z\n1,3,z\n",
        {},
        r"class 'z' has 2 row\(s\); allowed: at least 3 rows in every class",
    ),
    "too many classes": (
        HEADER + "".join(f"{i},{i},c{i % 10}\n" for i in range(30)),
        {},
        r"30 rows in 10 classes are too few for a stratified 20% test .*allowed: more rows",
    ),
    "empty file": ("", {}, r"path='.*' is empty; allowed: a CSV file with a header row"),
    "blank lines only": ("\n\n  \n", {}, r"is empty"),
    "header only": (HEADER, {}, r"has a header but no rows"),
    "a short row": (HEADER + GOOD_ROWS + "1,x\n", {}, r"line 22 has 2 fields and the header 3"),
    "one class": (
        HEADER + GOOD_ROWS.replace(",y\n", ",x\n"),
        {},
        r"target 'label' holds one label, 'x'; allowed: .*at least 2 distinct",
    ),
    "an empty label": (HEADER + GOOD_ROWS + "1,2,\n", {}, r"target 'label' is empty on line 22"),
    "a pandas index": (
        "," + HEADER + "".join(f"{i},{row}" for i, row in enumerate(GOOD_ROWS.splitlines(True))),
        {},
        r"column 1 has no name in the header; allowed: .*index=False",
    ),
    "a column twice": ("a,a,label\n" + GOOD_ROWS, {}, r"column 'a' appears twice"),
    "drop an unknown column": (HEADER + GOOD_ROWS, {"drop": ["c"]}, r"drop: 'c' is not a col"),
    "drop the target": (HEADER + GOOD_ROWS, {"drop": ["label"]}, r"drop: 'label' is the target"),
    "not utf-8": (None, {}, r"cannot be read as UTF-8 CSV"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_each_bad_file_is_one_value_error_naming_what_is_wrong(tmp_path: Path, case: str) -> None:
    text, options, message = BAD_FILES[case]
    path = tmp_path / "table.csv"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    elif case == "not utf-8":
        path.write_bytes(HEADER.encode() + "1,2,\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError) as error:
        create_datamodule("csv", **{"path": path, "target": "label", **options})
    assert len(str(error.value).splitlines()) == 1
    assert error.match(message)


def test_a_good_file_next_to_the_bad_ones_builds(tmp_path: Path) -> None:
    """The bad files above differ from this one by their mistake alone."""
    path = tmp_path / "table.csv"
    path.write_text(HEADER + GOOD_ROWS, encoding="utf-8")
    dm = create_datamodule("csv", path=path, target="label")
    assert dm.input_shape == (2,) and dm.class_names == ("x", "y")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, r"needs path \(a CSV file\) and target .*got path=None, target=None"),
        ({"path": "t.csv"}, r"got target=None"),
        ({"path": 3, "target": "y"}, r"path=3 is invalid"),
        ({"path": "t.csv", "target": ""}, r"target='' is invalid"),
        ({"path": "t.csv", "target": "y", "drop": "id"}, r"drop='id' is invalid; allowed: a list"),
    ],
)
def test_missing_or_malformed_options_are_named(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        create_datamodule("csv", **options)
