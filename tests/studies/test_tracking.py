"""W&B tracking: one offline run per trial, read back from its `.wandb` transaction log."""

from __future__ import annotations

from optuna.trial import TrialState

from tests.studies.conftest import LRS, MixedStudy
from tests.studies.wandb_records import OfflineRun, read_run

STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


def offline_runs(study: MixedStudy) -> dict[str, OfflineRun]:
    runs = [read_run(d) for d in sorted((study.runs / "wandb").glob("offline-run-*"))]
    return {run.name: run for run in runs}


def test_one_offline_run_per_trial_with_its_params_metrics_and_state(
    mixed_study: MixedStudy,
) -> None:
    runs = offline_runs(mixed_study)
    trials = mixed_study.study().trials
    assert sorted(runs) == sorted(f"mixed-trial-{t.number}" for t in trials)
    assert {STATE[t.state] for t in trials} == set(LRS)  # one trial of each state
    for trial in trials:
        run = runs[f"mixed-trial-{trial.number}"]
        assert run.group == "mixed"
        assert run.config["model.lr"] == trial.params["model.lr"]
        assert run.summary["state"] == STATE[trial.state]
        assert run.exit_code == (1 if trial.state == TrialState.FAIL else 0)
        logged_epochs = {row["epoch"] for row in run.history if "val/loss" in row}
        assert len(logged_epochs) == trial.user_attrs["epochs"]
        if trial.state == TrialState.COMPLETE:
            assert run.summary["test/acc"] == trial.user_attrs["test/acc"]
            assert run.summary["best/val/loss"] == trial.value
        else:
            assert "test/acc" not in run.summary  # tested once, only when training completed


def test_run_prints_the_sync_command_and_no_wandb_warning(mixed_study: MixedStudy) -> None:
    assert f"wandb sync {mixed_study.runs / 'wandb'}/offline-run-*" in mixed_study.out
    assert "anonymous" not in mixed_study.out
    assert "Traceback" not in mixed_study.out  # a diverged trial is reported in one line
    assert "non-finite objective at epoch 0" in mixed_study.out
