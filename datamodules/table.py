"""`csv`: a user's table, one row per sample, one column the class label.

    data: {name: csv, path: flowers.csv, target: species}
    data: {name: csv, path: patients.csv, target: outcome, drop: [id, ward]}

The file is UTF-8 with a header row of distinct column names, comma separated. `target` holds
the labels, which may be any text ("setosa", "yes", "3"): the classes are its distinct values,
sorted (as numbers when every label is one), and their names travel with a trained model, so
its predictions map back to them. Every other column is a feature, in file order, and must
hold a finite number in every row. A column that is not a feature, text (a name, a date) or a
number that must not be learnt from (a row id), is named in `drop`: a non-numeric column is
refused, never silently left out, since a column of measurements with one typo would otherwise
vanish from the features unnoticed.

A relative `path` is read from the current folder, as `data_dir` and `runs_dir` are. The
file is read, and every mistake in it refused, when the datamodule is built: a study config is
checked that way before its first trial. The test split is the base's fixed stratified 20%,
and the validation split is drawn by the study's `seed` (`split_seed`).
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regzoo._checks import one_line
from regzoo.datamodules._augment import check_fits_data
from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.base import ArrayDataModule, Arrays

# A class with fewer rows cannot be in both stratified splits (test, then validation) and in
# the training split: scikit-learn needs 2 of a class in the part it splits.
MIN_CLASS_ROWS = 3
SHOWN_COLUMNS = 20  # a message lists at most this many column names


@dataclass(frozen=True)
class Table:
    """A CSV file as arrays: features `x` (N, D) float32, label indices `y` (N,) int64."""

    x: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]


@register_datamodule("csv")
class CsvTable(ArrayDataModule):
    """A CSV file's numeric columns as (D,) feature vectors, `target` as the class labels.

    Args:
        path: The CSV file; a relative path is read from the current folder.
        target: The column holding the class labels.
        drop: Columns that are neither features nor the target (text, ids).
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        target: str | None = None,
        drop: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        _check_form(path, target, drop)
        assert path is not None and target is not None
        self.path, self.target, self.drop = Path(path), target, list(drop or [])
        self.table = _read_once(self.path, _stamp(self.path), target, tuple(self.drop))
        self.nominal_shape = (len(self.table.feature_names),)
        self.nominal_classes = len(self.table.class_names)
        check_fits_data(self.augment_spec, self.nominal_shape, self.dataset_name)
        self._check_stratifiable()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature columns, in the order of a raw input's entries."""
        return self.table.feature_names

    @property
    def class_names(self) -> tuple[str, ...]:
        """The target's distinct labels, in label order."""
        return self.table.class_names

    def load(self) -> Arrays:
        return Arrays(x=self.table.x, y=self.table.y)

    def _check_stratifiable(self) -> None:
        """Refuse, before any training, a table whose classes the splits cannot stratify."""
        where = f"path={str(self.path)!r}, target={self.target!r}"
        counts = np.bincount(self.table.y, minlength=len(self.table.class_names))
        rarest = int(counts.argmin())
        if counts[rarest] < MIN_CLASS_ROWS:
            raise ValueError(
                f"{where}: class {self.table.class_names[rarest]!r} has {counts[rarest]} row(s); "
                f"allowed: at least {MIN_CLASS_ROWS} rows in every class, for stratified test "
                "and validation splits"
            )
        try:
            self.split(self.table.y)
        except ValueError as exc:  # scikit-learn: a split smaller than the number of classes
            raise ValueError(
                f"{where}: {len(self.table.y)} rows in {len(counts)} classes are too few for a "
                f"stratified {self.test_fraction:.0%} test and val_fraction={self.val_fraction} "
                f"validation split ({one_line(exc, lines=1)}); allowed: more rows per class"
            ) from None


def read_table(path: Path, target: str, drop: Sequence[str]) -> Table:
    """The features and labels of a CSV file; a ValueError names the first thing wrong in it."""
    header, rows, lines = _read_rows(path)
    where = f"path={str(path)!r}"
    _check_columns(header, target, drop, where)
    columns = list(zip(*rows, strict=True))
    features = [name for name in header if name != target and name not in drop]
    if not features:
        raise ValueError(
            f"{where}: no feature column besides target {target!r}"
            + (f" and drop {list(drop)}" if drop else "")
            + "; allowed: at least one numeric column that is not the target or dropped"
        )
    x = np.stack(
        [_numbers(columns[header.index(name)], lines, name, where) for name in features], 1
    )
    labels = columns[header.index(target)]
    empty = [line for line, label in zip(lines, labels, strict=True) if not label]
    if empty:
        raise ValueError(
            f"{where}: target {target!r} is empty on line {empty[0]}; allowed: a label in "
            "every row (remove the unlabelled rows)"
        )
    class_names = tuple(sorted(set(labels), key=_label_order(labels)))
    if len(class_names) < 2:
        raise ValueError(
            f"{where}: target {target!r} holds one label, {class_names[0]!r}; allowed: a column "
            "of at least 2 distinct class labels"
        )
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    x = x.astype(np.float32)
    for array in (x, y):  # shared by every datamodule of the file (`_read_once`)
        array.flags.writeable = False
    return Table(
        x=x.astype(np.float32), y=y, feature_names=tuple(features), class_names=class_names
    )


@functools.lru_cache(maxsize=1)
def _read_once(
    path: Path, stamp: tuple[str, int, int] | None, target: str, drop: tuple[str, ...]
) -> Table:
    """`read_table`, kept for the next datamodule of the same unchanged file: a study builds one
    per search value to check its config, then one per trial (100,000 rows by 20 columns take
    about 4 s to parse on a shared 2-core CPU). Mistakes are raised, never kept."""
    return read_table(path, target, drop)


def _stamp(path: Path) -> tuple[str, int, int] | None:
    """Which file `path` is now (resolved, modified, size); None where it is not a file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the data rows (each cell stripped; blank lines skipped) and the line in the
    file where each row ends, for messages."""
    where = f"path={str(path)!r}"
    if not path.is_file():
        resolved = f" ({path.resolve()})" if not path.is_absolute() else ""
        raise ValueError(
            f"{where} is not a file{resolved}; allowed: a CSV file (a relative path is read "
            "from the current folder)"
        )
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            read = [
                (reader.line_num, [cell.strip() for cell in row])
                for row in reader
                if any(cell.strip() for cell in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{where} cannot be read as UTF-8 CSV: {one_line(exc)}") from None
    if not read:
        raise ValueError(
            f"{where} is empty; allowed: a CSV file with a header row and a row per sample"
        )
    header = read[0][1]
    if len(read) == 1:
        raise ValueError(f"{where} has a header but no rows; allowed: a row per sample")
    for line, row in read[1:]:
        if len(row) != len(header):
            raise ValueError(
                f"{where}: line {line} has {len(row)} fields and the header {len(header)}; "
                "allowed: as many fields in every row as columns"
            )
    return header, [row for _, row in read[1:]], [line for line, _ in read[1:]]


def _check_columns(header: list[str], target: str, drop: Sequence[str], where: str) -> None:
    """Named, distinct columns; `target` and every `drop` among them, `target` not dropped."""
    for i, name in enumerate(header):
        if not name:
            raise ValueError(
                f"{where}: column {i + 1} has no name in the header; allowed: a name for every "
                "column (a pandas index has none: write the file with to_csv(index=False))"
            )
        if header.index(name) != i:
            raise ValueError(
                f"{where}: column {name!r} appears twice in the header; allowed: distinct names"
            )
    if target not in header:
        raise ValueError(f"target={target!r} is not a column of {where}; allowed: {_list(header)}")
    for name in drop:
        if name not in header:
            raise ValueError(f"drop: {name!r} is not a column of {where}; allowed: {_list(header)}")
    if target in drop:
        raise ValueError(f"drop: {target!r} is the target; allowed: columns other than the target")


def _numbers(cells: Sequence[str], lines: Sequence[int], name: str, where: str) -> np.ndarray:
    """A feature column as float64; a cell that is no finite number is refused by its line."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and np.isfinite(values).all():
        return values
    for line, cell in zip(lines, cells, strict=True):
        if not _is_finite_number(cell):
            what = "an empty cell" if not cell else f"{cell!r}"
            raise ValueError(
                f"{where}: column {name!r} holds {what} on line {line}; allowed: a "
                f"finite number in every row of a feature column, or drop: [{name}]"
            )
    raise AssertionError("a column numpy refused holds only finite numbers")


def _is_finite_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def _label_order(labels: Sequence[str]) -> Any:
    """Sort key of the classes: by value when every label is a number ("2" before "10"),
    else as text."""
    if all(_is_finite_number(label) for label in labels):
        return lambda label: (float(label), label)
    return lambda label: label


def _list(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:SHOWN_COLUMNS])
    more = f", ... ({len(columns)} columns)" if len(columns) > SHOWN_COLUMNS else ""
    return f"one of its columns {shown}{more}"


def _check_form(path: Any, target: Any, drop: Any) -> None:
    """Each option well formed where given, then `path` and `target` both given."""
    if path is not None and not (isinstance(path, str | os.PathLike) and str(path)):
        raise ValueError(f"path={path!r} is invalid; allowed: the path of a CSV file")
    if target is not None and not (isinstance(target, str) and target.strip()):
        raise ValueError(f"target={target!r} is invalid; allowed: the name of a column")
    if drop is not None and (
        isinstance(drop, str)
        or not isinstance(drop, list | tuple)
        or not all(isinstance(name, str) for name in drop)
    ):
        raise ValueError(f"drop={drop!r} is invalid; allowed: a list of column names")
    missing = [
        f"{key}=None" for key, value in (("path", path), ("target", target)) if value is None
    ]
    if missing:
        raise ValueError(
            f"dataset 'csv' needs path (a CSV file) and target (its label column); got "
            f"{', '.join(missing)}"
        )
