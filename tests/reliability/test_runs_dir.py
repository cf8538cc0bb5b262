"""A results folder that cannot be written, or a disk too full: one line, exit 2, before the
first trial, and nothing half-written (no study in the storage, no folder left behind).

The tests run as root, whom permission bits do not stop: `runs` is made a file (or its parent
is), and "full" is a free-space floor above what the disk has (REGZOO_MIN_FREE_MB).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from regzoo.studies.cli.main import main
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import TINY, Tally, as_sets

FULL = "REGZOO_MIN_FREE_MB"


def beyond_free_space(path: Path) -> str:
    """A floor in MB that the disk holding `path` cannot meet."""
    return str(shutil.disk_usage(path).free // 2**20 * 2 + 1)


def no_study_in(db: Path) -> bool:
    if not db.exists():
        return True
    return not sqlite3.connect(db).execute("select * from sqlite_master").fetchall()


CASES = {
    "runs is a file": ("runs", "is not a writable folder"),
    "parent of runs is a file": ("blocker/runs", "is not a writable folder"),
    "disk too full": ("runs", "MB free"),
}


@pytest.mark.parametrize("command", ["run", "run --workers 2", "train"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_an_unwritable_or_full_runs_dir_stops_before_the_first_trial(
    case: str,
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tally: Tally,
) -> None:
    sub, words = CASES[case]
    runs = tmp_path / sub
    blocker = tmp_path / sub.split("/")[0]
    if case != "disk too full":
        blocker.write_text("a file where a folder should be\n")
    else:
        monkeypatch.setenv(FULL, beyond_free_space(tmp_path))
    db = tmp_path / "studies.db"
    args = [*command.split(), str(DEFAULT_CONFIG), *as_sets([*TINY, f"runs_dir={runs}"])]
    if command.startswith("run"):
        args += ["--storage", f"sqlite:///{db}", "--trials", "1"]
    assert main([*args, "--wandb", "disabled"]) == 2
    tally.inject("unwritable or full runs/")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(runs) in err and words in err, err
    assert no_study_in(db)
    if case == "disk too full":
        assert not runs.exists()  # the check's own folder is removed again
    else:
        assert blocker.read_text() == "a file where a folder should be\n"
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], [blocker.name], ["studies.db"])


def test_the_default_storage_under_an_unwritable_runs_is_one_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], tally: Tally
) -> None:
    (in_tmp / "runs").write_text("")
    assert main(["run", str(DEFAULT_CONFIG), "--wandb", "disabled"]) == 2
    tally.inject("unwritable or full runs/")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'runs'" in err, err


def test_a_bad_free_space_floor_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(FULL, "lots")
    args = ["run", str(DEFAULT_CONFIG), "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main([*args, f"--set=runs_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{FULL}='lots'" in err, err


def test_two_storages_with_a_study_of_the_same_name_keep_each_others_checkpoints(
    in_tmp: Path,
) -> None:
    """Each study keeps its trials under its own id: a second storage's `cnn-digits` (and a
    study deleted and created again in the first) writes beside, never over, the first's."""
    import optuna

    from regzoo import load_model
    from regzoo.studies.executor.storage import open_storage

    def run(url: str) -> optuna.trial.FrozenTrial:
        args = ["run", str(DEFAULT_CONFIG), "--storage", url, "--trials", "1"]
        assert main([*args, "--wandb", "disabled", "--no-progress", *as_sets(TINY)]) == 0
        [trial] = optuna.load_study(study_name="cnn-digits", storage=open_storage(url)).trials
        return trial

    first_url = f"sqlite:///{in_tmp / 'a.db'}"
    first = run(first_url)
    checkpoint = Path(first.user_attrs["checkpoint"])
    before = checkpoint.read_bytes()
    second = run(f"sqlite:///{in_tmp / 'b.db'}")
    optuna.delete_study(study_name="cnn-digits", storage=open_storage(first_url))
    third = run(first_url)  # the same name in the same storage, a new study
    folders = {Path(t.user_attrs["checkpoint"]).parent for t in (first, second, third)}
    assert len(folders) == 3 and all(f.name == "trial-0" for f in folders)
    assert checkpoint.read_bytes() == before  # the first trial's files untouched
    load_model(checkpoint)
