"""A multi-objective study (issue 26 item 4): `objective:` as a list runs Optuna's
multi-objective optimization, resumes, and reports its Pareto front."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.loop.read import pareto_front
from regzoo.studies.results.wandb_study import trial_rows
from regzoo.studies.trial.console import fmt
from regzoo.studies.trial.metrics import read_metrics
from regzoo.studies.verdicts.read import read_verdicts
from regzoo.zoo import load_model
from tests.conftest import DEFAULT_CONFIG, trials_folder
from tests.studies.test_end_to_end import TINY
from tests.studies.test_wandb_study import table
from tests.studies.wandb_records import offline_runs_of, read_run

TWO = [
    "--set",
    "objective=[{metric: val/acc, direction: maximize}, "
    "{metric: model/params, direction: minimize}]",
    "--set",
    "pruner.name=none",
    # Parameters that change the parameter count: a search over the model's size.
    "--set",
    "search={model.kernel_size: {choice: [3, 5]}, model.lr: {float: [0.002, 0.02], log: true}}",
]


def test_a_two_objective_study_runs_resumes_and_reports_its_front(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # `list`'s table on one line a row
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    run = ["run", str(DEFAULT_CONFIG), "--storage", url, *TINY, *TWO]
    assert main([*run, "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out
    study = optuna.load_study(study_name="cnn-digits", storage=open_storage(url))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:  # told both: the kept epoch's val/acc and the model's own parameter count
        model = load_model(Path(t.user_attrs["checkpoint"]))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert t.values[1] == trainable
        assert t.values[0] == pytest.approx(max(_val_acc(t)))
    first = study.trials

    assert main([*run, "--trials", "4"]) == 0
    assert "3 of 4 trials already finished" in capsys.readouterr().out
    resumed = optuna.load_study(study_name="cnn-digits", storage=open_storage(url))
    assert len(resumed.trials) == 4 and resumed.trials[:3] == first
    front = pareto_front(resumed)
    for t in front:  # no other trial is as good on both and better on one
        assert not any(_dominates(o.values, t.values) for o in resumed.trials if o.values)

    assert main(["report", "cnn-digits", "--storage", url]) == 0
    report = trials_folder(in_tmp / "runs" / "cnn-digits") / "report"
    assert (report / "pareto_front.png").is_file()
    summary = (report / "summary.md").read_text()
    assert "Pareto front" in summary and "model/params" in summary
    assert "first trials of the Pareto front" in (report / "index.html").read_text()
    for t in front:  # a parameter count shown whole
        assert f"| {t.number} | {fmt(t.values[0])} | {int(t.values[1])} |" in summary
    columns, rows = trial_rows(resumed)  # the W&B study run's trials table
    assert columns[2:4] == ["val/acc", "model/params"]
    assert [r[3] for r in rows] == [t.values[1] for t in resumed.trials]
    assert main(["report", "cnn-digits", "--storage", url, "--wandb", "offline"]) == 0
    wandb_dir = trials_folder(in_tmp / "runs" / "cnn-digits") / "wandb"
    run_dir = offline_runs_of(wandb_dir, "study")[-1]  # the study run, as the last report left it
    logged = table(run_dir, read_run(run_dir), "pareto_front")
    assert [(r["number"], r["val/acc"], r["model/params"]) for r in logged] == [
        (t.number, *t.values) for t in front
    ]

    assert main(["list", "--storage", url]) == 0  # the front's size where a best would be
    listed = capsys.readouterr().out
    assert f"Pareto front of {len(front)}" in listed and "minimize model/params" in listed

    # No best trial to export: one line lists the front; `--trial N` picks one of it.
    export = ["export", "cnn-digits", "--format", "ckpt", "--storage", url]
    assert main(export) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Pareto front with --trial N" in err, err
    assert err.endswith(", ".join(str(t.number) for t in front)), err
    chosen = front[-1]
    assert main([*export, "--trial", str(chosen.number), "--out", str(in_tmp / "m.ckpt")]) == 0
    assert (in_tmp / "m.ckpt").read_bytes() == Path(chosen.user_attrs["checkpoint"]).read_bytes()
    assert main([*export, "--trial", "99"]) == 2
    assert "--trial 99: study 'cnn-digits' has no trial 99" in capsys.readouterr().err

    # `confirm --trials N,M` retrains the trials asked for, in that order.
    picked = [resumed.trials[2].number, resumed.trials[0].number]
    confirm = ["confirm", "cnn-digits", "--seeds", "2", "--storage", url, "--wandb", "disabled"]
    assert main([*confirm, "--trials", ",".join(map(str, picked))]) == 0
    study = optuna.load_study(study_name="cnn-digits", storage=open_storage(url))
    confirmation = read_verdicts(study, url).confirmation
    assert confirmation is not None
    assert [c.trial for c in confirmation.candidates] == picked
    assert all(len(c.runs) == 2 for c in confirmation.candidates)


def _val_acc(trial: optuna.trial.FrozenTrial) -> list[float]:
    """The trial's val/acc per epoch, read back from its metrics.csv."""
    return [m["val/acc"] for m in _epochs(trial).values() if "val/acc" in m]


def _dominates(a: list[float], b: list[float]) -> bool:
    """Whether values `a` (maximize, minimize) beat `b` on one objective and lose on none."""
    better = (a[0] > b[0], a[1] < b[1])
    worse = (a[0] < b[0], a[1] > b[1])
    return any(better) and not any(worse)


def test_later_objectives_are_read_at_the_kept_epoch_and_seconds_are_the_runs(
    in_tmp: Path,
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    three = "objective=[{metric: val/acc}, {metric: val/loss, direction: minimize}, "
    three += "{metric: run/seconds, direction: minimize}]"
    run = ["run", str(DEFAULT_CONFIG), "--storage", url, *TINY, *TWO, "--set", three]
    assert main([*run, "--trials", "2", "--set", "trainer.max_epochs=3"]) == 0
    study = optuna.load_study(study_name="cnn-digits", storage=open_storage(url))
    assert len(study.directions) == 3
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        epochs = _epochs(t)
        kept = max(epochs, key=lambda e: epochs[e]["val/acc"])  # the first best, as kept
        assert t.values[0] == pytest.approx(epochs[kept]["val/acc"])
        assert t.values[1] == pytest.approx(epochs[kept]["val/loss"])
        assert t.values[2] == t.user_attrs["seconds"]  # the run's own: the same number


def _epochs(trial: optuna.trial.FrozenTrial) -> dict[int, dict[str, float]]:
    """The trial's metrics by epoch, read back from its metrics.csv."""
    return read_metrics(Path(trial.user_attrs["checkpoint"]).parent / "metrics.csv")
