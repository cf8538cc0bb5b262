"""A small real study shared by the tracking, report, export, list and dashboard tests.

Three tiny trials, enqueued so that each ends in a different state: a learning rate of 1e9
diverges (val/loss NaN: failed), 0.1 learns (complete), 1e-7 barely moves and is pruned by the
median pruner against the complete one. Real Lightning, SQLite and W&B offline throughout.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from regzoo.studies import load_config, open_study
from regzoo.studies.cli.main import main
from tests.conftest import DEFAULT_CONFIG

TINY = [
    "--set",
    "trainer.max_epochs=2",
    "--set",
    "trainer.limit_train_batches=4",
    "--set",
    "trainer.limit_val_batches=2",
    "--set",
    "confirm=null",  # the default study's confirmation: tests/studies/test_verdicts*.py
    "--set",
    "model.channels=[4, 8]",
    "--set",
    "model.hidden=[16]",
]
LRS = {"failed": 1.0e9, "complete": 0.1, "pruned": 1.0e-7}  # in the order they run


@dataclass
class MixedStudy:
    name: str
    url: str
    runs: Path
    out: str  # what `run` printed, stdout and stderr together

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.url)


def mixed_overrides(runs: Path) -> list[str]:
    return [
        *TINY,
        "--set",
        "name=mixed",
        "--set",
        f"runs_dir={runs}",
        "--set",
        "model.optimizer=momentum",
        "--set",
        "search={model.lr: {float: [1.0e-8, 1.0e+10], log: true}}",
        "--set",
        "objective={metric: val/loss, direction: minimize}",
        "--set",
        "pruner={name: median, n_startup_trials: 1, n_warmup_steps: 0}",
        "--set",
        "sampler={name: random, seed: 0}",
    ]


@pytest.fixture(scope="session")
def mixed_study(tmp_path_factory: pytest.TempPathFactory) -> MixedStudy:
    root = tmp_path_factory.mktemp("mixed")
    url = f"sqlite:///{root / 'studies.db'}"
    overrides = mixed_overrides(root / "runs")
    cfg = load_config(DEFAULT_CONFIG, overrides=[a for a in overrides if a != "--set"])
    study = open_study(cfg, url)
    for lr in LRS.values():
        study.enqueue_trial({"model.lr": lr})
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        run = ["run", str(DEFAULT_CONFIG), "--trials", "2", "--storage", url]
        code = main([*run, "--wandb", "offline", "--no-progress", *overrides])
    assert code == 0, buffer.getvalue()
    return MixedStudy(name="mixed", url=url, runs=root / "runs", out=buffer.getvalue())
