"""Experiments trained as populations against one trial per Trainer (`--population 1`): the
same trials, attributes, probe outputs and table, as few Trainers as the grouping says, and a
rerun that trains only the missing settings. Real Lightning, Optuna and SQLite throughout.

Tolerance. Without dropout or augmentation a member follows the same arithmetic as its single
trial, in float32, but not bit for bit: the batched network runs through `torch.func.vmap`
(batched matmuls whose sums are blocked differently), the loss is one backward pass through the
sum of the members' losses, and the metrics are averaged in float64 where Lightning logs float32
means. Each of those moves a value by a few float32 ulps (1.2e-7 relative); over the tens of
full-batch steps here they add up to about 1e-6 relative (measured: at most 2.4e-7 relative on
losses, 1e-7 on weight norms over 100 epochs of the course's experiments). So values are compared
with rtol 1e-5, ten times that, and atol 1e-6 for quantities that are themselves rounding noise
(the distance between two trajectories that agree to float rounding).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import optuna
import pytest
from matplotlib.figure import Figure
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.experiments import (
    get_experiment,
    list_experiments,
    run_experiment,
    run_experiments,
)
from regzoo.studies.experiments._course import course_config
from regzoo.studies.experiments._populations import Point, plan_all
from regzoo.studies.experiments._probes import (
    BoundaryProbe,
    GradNormProbe,
    LrProbe,
    TrajectoryProbe,
    TruthTableProbe,
    WeightProbe,
)
from regzoo.studies.experiments._run import _config
from regzoo.studies.experiments._spec import Experiment, ExperimentRun, Row, Setting
from regzoo.studies.experiments._train import STALE

RTOL, ATOL = 1e-5, 1e-6
EPOCHS = 12
FILES = ("boundary.npz", "weights.npz", "grad_norms.npy", "lr.npy", "trajectory.npy")
SETTINGS = [
    Setting("sgd 0.3", {"model.lr": 0.3}),
    Setting("sgd 0.05 + l2", {"model.lr": 0.05, "model.l2": 1e-3}),
    Setting(
        "sgd piecewise",
        {"model.scheduler": "piecewise", "model.milestones": [4], "model.lr_values": [0.3, 0.03]},
    ),
    Setting("sgd xavier + decay", {"model.init": "xavier", "model.weight_decay": 1e-2}),
    Setting("adam", {"model.optimizer": "adam", "model.lr": 0.03}),
    # A member's own epoch count and early stopping: it leaves the batch where it would stop.
    Setting("sgd 7 epochs, cosine", {"trainer.max_epochs": 7, "model.scheduler": "cosine"}),
    Setting(
        "adam early-stopped",
        {
            "model.optimizer": "adam",
            "model.lr": 0.3,
            "early_stopping": {"monitor": "val/loss", "patience": 2},
        },
    ),
]


def probes(cfg: Any) -> list[lightning.Callback]:
    return [
        BoundaryProbe(resolution=12),
        WeightProbe(),
        GradNormProbe(),
        LrProbe(),
        TrajectoryProbe(),
        TruthTableProbe(),
    ]


def table(run: ExperimentRun) -> list[Row]:
    """Every number a probe leaves: the losses, the attributes and the arrays' summaries."""
    rows = []
    for label in run.labels:
        rec = run.one(label)
        attrs = {k: v for k, v in rec.attrs.items() if isinstance(v, int | float)}
        attrs.pop("seconds")
        arrays = {name: rec.arrays(name) for name in ("boundary.npz", "weights.npz")}
        row: Row = {"setting": label, **rec.losses(), **attrs}
        row["p_best_mean"] = float(arrays["boundary.npz"]["p_best"][..., 1].mean())
        row["p_final_mean"] = float(arrays["boundary.npz"]["p_final"][..., 1].mean())
        row["moved_sum"] = float(arrays["weights.npz"]["moved"].sum())
        row["lr_sum"] = float(np.load(rec.file("lr.npy")).sum())
        row["grad_norm_sum"] = float(np.load(rec.file("grad_norms.npy")).sum())
        row["trajectory_norm"] = float(np.linalg.norm(np.load(rec.file("trajectory.npy"))))
        rows.append(row)
    return rows


EXPERIMENT = Experiment(
    name="populations",
    title="every probe, three populations",
    factor="setting",
    base=course_config(optimizer="sgd", lr=0.3),
    settings=SETTINGS,
    table=table,
    figure=lambda run, rows: Figure(),
    quick={"trainer.max_epochs": EPOCHS},
    probes=probes,
)


class TrainerCount:
    """Counts the Lightning Trainers built while it is installed (one per population)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        counter = self

        class Counted(lightning.Trainer):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                counter.count += 1
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(lightning, "Trainer", Counted)


def run(exp: Experiment, storage: str, population: int | None = None) -> dict[str, Row]:
    result = run_experiment(
        exp,
        quick=True,
        storage=storage,
        wandb="disabled",
        population=population,
        console=Console(quiet=True),
    )
    return {row["setting"]: row for row in result.rows}


def trials(exp: Experiment, storage: str) -> list[optuna.trial.FrozenTrial]:
    name = exp.study_name(quick=True)
    return optuna.load_study(study_name=name, storage=open_storage(storage)).trials


def assert_same_rows(a: dict[str, Row], b: dict[str, Row]) -> None:
    assert a.keys() == b.keys()
    for label in a:
        assert a[label].keys() == b[label].keys(), label
        for key, value in a[label].items():
            if isinstance(value, float):
                assert value == pytest.approx(b[label][key], rel=RTOL, abs=ATOL), (label, key)
            else:
                assert value == b[label][key], (label, key)


def test_populations_give_the_table_of_one_trial_per_trainer(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainers = TrainerCount(monkeypatch)
    batched = run(EXPERIMENT, f"sqlite:///{in_tmp / 'batched.db'}")
    # One population: members may differ in optimizer and schedule kinds too.
    assert trainers.count == 1
    trainers.count = 0
    single = run(EXPERIMENT, f"sqlite:///{in_tmp / 'single.db'}", population=1)
    assert trainers.count == len(SETTINGS)
    assert_same_rows(batched, single)
    assert batched["sgd 7 epochs, cosine"]["epochs"] == 7
    assert batched["adam early-stopped"]["epochs"] < EPOCHS  # it stopped on its own criteria
    # The rows hold more than losses: each probe's summary made it into the attributes.
    assert {"best_epoch", "weight_norm", "grad_norm_first", "truth_table_acc"} <= set(
        batched["adam"]
    )

    by_mode = {}
    for db in ("batched", "single"):
        done = trials(EXPERIMENT, f"sqlite:///{in_tmp / (db + '.db')}")
        assert [t.state for t in done] == [TrialState.COMPLETE] * len(SETTINGS)
        by_mode[db] = {t.params["setting"]: t for t in done}
    for label, t in by_mode["batched"].items():
        other = by_mode["single"][label]
        assert t.user_attrs.keys() - {"population"} == other.user_attrs.keys(), label
        assert t.user_attrs["fingerprint"] == other.user_attrs["fingerprint"]
        batched_dir, single_dir = Path(t.user_attrs["run_dir"]), Path(other.user_attrs["run_dir"])
        for name in FILES:  # every member wrote every probe's file, as its single trial did
            a, b = _arrays(batched_dir / name), _arrays(single_dir / name)
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=ATOL, err_msg=key)
        assert (batched_dir / "best.ckpt").is_file() and (batched_dir / "metrics.csv").is_file()


def _arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npy":
        return {"": np.load(path)}
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_a_rerun_trains_only_the_missing_settings_as_their_populations(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{in_tmp / 'resume.db'}"
    # An older definition of three settings: a rerun retrains them, and only them.
    changed = {"sgd 0.05 + l2", "sgd piecewise", "sgd xavier + decay"}
    older = [
        dataclasses.replace(s, overrides={**s.overrides, "model.lr": 0.2})
        if s.label in changed
        else s
        for s in SETTINGS
    ]
    run(dataclasses.replace(EXPERIMENT, settings=older), storage)
    done = {t.params["setting"]: t.number for t in trials(EXPERIMENT, storage)}
    assert len(done) == len(SETTINGS)
    done = {label: number for label, number in done.items() if label not in changed}
    # A run stopped before it trained what it had queued leaves a WAITING trial behind.
    study = optuna.load_study(
        study_name=EXPERIMENT.study_name(quick=True), storage=open_storage(storage)
    )
    study.enqueue_trial({"setting": "sgd piecewise"})

    trainers = TrainerCount(monkeypatch)
    result = run_experiment(
        EXPERIMENT, quick=True, storage=storage, wandb="disabled", console=Console(quiet=True)
    )
    assert [row["setting"] for row in result.rows] == [s.label for s in SETTINGS]
    numbers = {r.label: r.number for r in result.run.records}
    assert {label: numbers[label] for label in done} == done  # read back, not retrained
    # Missing: two SGD settings and the schedule, trained as one population.
    assert trainers.count == 1
    after = trials(EXPERIMENT, storage)
    stale = [t for t in after if t.state == TrialState.FAIL]
    assert [t.user_attrs["error"] for t in stale] == [STALE]
    new = [t.params["setting"] for t in after[len(SETTINGS) :] if t.state == TrialState.COMPLETE]
    assert sorted(new) == sorted(changed)

    trainers.count = 0
    run(EXPERIMENT, storage)  # nothing left to train
    assert trainers.count == 0


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (
            64,
            {
                "xor": [1, 1, 1],
                "learning_rate": [4],
                "optimizers": [5],
                "initialization": [6],
                "normalization": [3, 1],
                "l2": [4],
                "weight_decay_vs_l2": [4],
                "dropout": [4],
                "early_stopping": [2],
                "augmentation": [21],
                "capacity": [5, 5, 5],
            },
        ),
        (4, {"initialization": [3, 3], "augmentation": [4, 3, 3, 4, 4, 3], "l2": [4]}),
    ],
)
def test_each_grid_trains_as_the_fewest_populations_its_settings_allow(
    size: int, expected: dict[str, list[int]]
) -> None:
    """Settings differing only in member values (and sharing a seed) share a population; an
    optimizer, architecture, data set, schedule or epoch count of their own trains apart."""
    assert set(expected) <= set(list_experiments())
    for name, sizes in expected.items():
        exp = get_experiment(name)
        settings, seeds = exp.chosen(quick=False), exp.replicates(quick=False)
        configs = {s.label: _config(exp, s, False) for s in settings}
        points = [Point(s, seed) for s in settings for seed in seeds]
        items = [(exp, p) for p in points]
        batches = plan_all(items, {exp.name: configs}, quick=False, size=size)
        assert [len(b) for b in batches] == sizes, name
        assert sorted((p.label, p.seed) for b in batches for p in b.points) == sorted(
            (p.label, p.seed) for p in points
        )


def test_settings_that_cannot_be_batched_train_one_per_trainer_with_a_note(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mixed precision is not batched: the population's settings train as `--population 1`
    would, and the output says why in one line."""
    exp = dataclasses.replace(
        EXPERIMENT,
        settings=SETTINGS[:2],
        quick={"trainer.max_epochs": 2, "trainer.precision": "bf16-mixed"},
        probes=lambda cfg: [],
        table=lambda run: [{"setting": label} for label in run.labels],
    )
    trainers = TrainerCount(monkeypatch)
    console = Console(record=True, width=200)
    storage = f"sqlite:///{in_tmp / 'mixed.db'}"
    run_experiment(exp, quick=True, storage=storage, wandb="disabled", console=console)
    assert trainers.count == 2
    assert "trainer.precision" in console.export_text()
    assert [t.state for t in trials(exp, storage)] == [TrialState.COMPLETE] * 2


def test_cli_population_1_trains_one_setting_per_trainer(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trainers = TrainerCount(monkeypatch)
    storage = f"sqlite:///{in_tmp / 'cli.db'}"
    args = ["experiment", "xor", "--quick", "--storage", storage, "--wandb", "disabled"]
    assert main([*args, "--population", "1", "--workers", "1"]) == 0  # Trainers counted here
    assert trainers.count == 3 and "population(s)" not in capsys.readouterr().out


def test_worker_processes_train_the_same_populations_as_one_process(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--workers 2`: two spawned processes take the populations (populations of at most 2
    here, so there are several); each point is trained once, in its own study, with the numbers
    one process gives."""
    one = run(EXPERIMENT, f"sqlite:///{in_tmp / 'one.db'}", population=2)
    storage = f"sqlite:///{in_tmp / 'two.db'}"
    result = run_experiments(
        [EXPERIMENT],
        quick=True,
        storage=storage,
        wandb="disabled",
        population=2,
        workers=2,
        console=Console(quiet=True),
    )[0]
    two = {row["setting"]: row for row in result.rows}
    assert two.keys() == one.keys()
    for label in one:  # the same populations, so the same arithmetic: equal, not close
        assert two[label] == one[label], label
    done = trials(EXPERIMENT, storage)
    assert [t.state for t in done] == [TrialState.COMPLETE] * len(SETTINGS)
    assert sorted(t.params["setting"] for t in done) == sorted(s.label for s in SETTINGS)
    # Both worker processes took their share: each trial records the process that trained it.
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2 and str(os.getpid()) not in {w.rpartition(":")[2] for w in workers}


@pytest.mark.parametrize(("cores", "workers"), [(2, 2), (4, 3)])
def test_the_cli_takes_one_worker_a_usable_core(
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cores: int,
    workers: int,
) -> None:
    """Without `--workers`, `regzoo experiment` spawns one process a usable core, before it
    knows its jobs, then keeps at most one a job: xor has three populations (three models).
    The processes it let go are gone when it returns."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    storage = f"sqlite:///{in_tmp / 'cli.db'}"
    args = ["experiment", "xor", "--quick", "--storage", storage, "--wandb", "disabled"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{workers} worker processes" in out
    assert [t.state for t in trials(get_experiment("xor"), storage)] == [TrialState.COMPLETE] * 3
    assert len({t.user_attrs["worker"] for t in trials(get_experiment("xor"), storage)}) <= workers
    assert multiprocessing.active_children() == []
