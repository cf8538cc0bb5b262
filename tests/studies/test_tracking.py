"""W&B tracking: one offline run per trial, read back from its `.wandb` transaction log."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from optuna.trial import FrozenTrial, TrialState

from regzoo.studies import load_config
from regzoo.studies.config.schema import StudyConfig
from regzoo.studies.trial import tracking
from regzoo.studies.trial.spec import TrialRef, TrialSpec
from regzoo.studies.trial.train import train_run
from tests.conftest import DEFAULT_CONFIG
from tests.studies.conftest import LRS, MixedStudy, mixed_overrides
from tests.studies.wandb_records import OfflineRun, read_run

STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
CONFIG_KEYS = {
    "trial",
    "study",
    "model",
    "data",
    "trainer",
    "seed",
    "objective",
    "checkpoint",
    "sampler",
    "pruner",
    "n_parameters",
    "searched",
}


def offline_runs(study: MixedStudy) -> dict[str, OfflineRun]:
    runs = [read_run(d) for d in sorted((study.runs / "wandb").glob("offline-run-*"))]
    return {run.name: run for run in runs}


def runs_by_trial(study: MixedStudy) -> list[tuple[FrozenTrial, OfflineRun]]:
    runs = offline_runs(study)
    return [(t, runs[f"mixed-trial-{t.number}"]) for t in study.study().trials]


def study_config(study: MixedStudy) -> StudyConfig:
    overrides = mixed_overrides(study.runs)
    return load_config(DEFAULT_CONFIG, overrides=[a for a in overrides if a != "--set"])


def logged(run: OfflineRun, metric: str) -> list[float]:
    return [row[metric] for row in run.history if metric in row]


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
        assert run.config["model"]["lr"] == trial.params["model.lr"]
        assert run.summary["state"] == STATE[trial.state]
        assert run.exit_code == (1 if trial.state == TrialState.FAIL else 0)
        logged_epochs = {row["epoch"] for row in run.history if "val/loss" in row}
        assert len(logged_epochs) == trial.user_attrs["epochs"]
        if trial.state == TrialState.COMPLETE:
            assert run.summary["test/acc"] == trial.user_attrs["test/acc"]
            assert run.summary["best/val/loss"] == trial.value
        else:
            assert "test/acc" not in run.summary  # tested once, only when training completed


def test_a_runs_config_holds_each_value_once_under_its_section(mixed_study: MixedStudy) -> None:
    cfg = study_config(mixed_study)
    for trial, run in runs_by_trial(mixed_study):
        config = {k: v for k, v in run.config.items() if k != "_wandb"}
        # No top-level hparams from Lightning; a member of a population (the default study
        # trains 8 at a time) also records how many trials trained with it.
        assert set(config) == CONFIG_KEYS | {"population"}
        assert config["population"] == {"size": len(trial.user_attrs["population"])}
        assert config["trial"] == trial.number and isinstance(config["trial"], int)
        assert config["study"] == "mixed"
        model = config["model"]
        assert model["name"] == cfg.model.name
        assert model["lr"] == trial.params["model.lr"]
        assert model["optimizer"] == "momentum"  # a fixed option, as the model was built
        assert {"input_shape", "num_classes"} <= set(model)  # every hparam of the built model
        assert "lr" not in config and "model.lr" not in config
        data = config["data"]  # the config's options over the datamodule's defaults
        assert data == {**data, "name": cfg.data.name, **cfg.data.options}
        assert data["val_fraction"] == 0.2 and "seed" not in data  # the seed is top-level
        assert config["trainer"]["max_epochs"] == 2
        assert config["trainer"]["limit_train_batches"] == 4
        assert config["seed"] == cfg.seed + trial.number
        assert config["objective"] == {"metric": "val/loss", "direction": "minimize"}
        assert config["sampler"] == {"name": "random", "seed": 0}
        assert config["pruner"]["name"] == "median"
        assert config["pruner"]["n_startup_trials"] == 1
        assert isinstance(config["n_parameters"], int) and config["n_parameters"] > 0
        assert config["searched"] == ["model.lr"]
        for key in config["searched"]:  # a searched key is a path into the config
            section, _, name = key.partition(".")
            assert config[section][name] == trial.params[key]
    n_parameters = {run.config["n_parameters"] for _, run in runs_by_trial(mixed_study)}
    assert len(n_parameters) == 1  # one architecture


def test_a_run_is_tagged_with_its_study_and_final_state(mixed_study: MixedStudy) -> None:
    for trial, run in runs_by_trial(mixed_study):
        assert run.tags == ["mixed", STATE[trial.state]]


def test_epoch_is_the_step_of_every_metric_and_best_of_summaries_are_defined(
    mixed_study: MixedStudy,
) -> None:
    for _, run in runs_by_trial(mixed_study):
        metrics = run.metrics
        assert "epoch" in metrics
        for glob in ("train/*", "val/*", "test/*"):
            assert metrics[glob].step_metric == "epoch"
        assert metrics["val/acc"].step_metric == "epoch"
        assert metrics["val/acc"].summary == {"max"}
        assert metrics["val/loss"].step_metric == "epoch"
        assert metrics["val/loss"].summary == {"min"}  # the objective, minimized
        # Lightning's WandbLogger defines `*` against its global step when it starts the run.
        assert "*" not in metrics and "trainer/global_step" not in metrics
        for row in run.history:
            if any(k.startswith(("train/", "val/", "test/")) for k in row):
                assert isinstance(row["epoch"], int)


def test_the_summary_keeps_the_best_epoch_time_and_what_ended_the_trial(
    mixed_study: MixedStudy,
) -> None:
    for trial, run in runs_by_trial(mixed_study):
        summary = run.summary
        assert summary["state"] == STATE[trial.state]
        assert summary["epochs"] == trial.user_attrs["epochs"]
        assert "seconds" in summary  # recorded; its value is the clock's, for benchmarks/
        assert summary["val/acc"] == max(logged(run, "val/acc"))
        losses = [
            (row["val/loss"], row["epoch"])
            for row in run.history
            if "val/loss" in row and math.isfinite(row["val/loss"])
        ]
        if losses:
            assert summary["val/loss"] == min(losses)[0]
            assert summary["best_epoch"] == min(losses)[1]  # 0-based, as Lightning counts
        else:  # diverged at once: no finite loss, no best epoch
            assert summary["val/loss"] is None
            assert "best_epoch" not in summary
        if trial.state == TrialState.COMPLETE:
            assert summary["best/val/loss"] == summary["val/loss"] == trial.value
            assert "pruned_at" not in summary and "error" not in summary
        elif trial.state == TrialState.PRUNED:
            assert summary["pruned_at"] == trial.user_attrs["pruned_at"]
            assert "error" not in summary
        else:
            assert summary["error"] == trial.user_attrs["error"]
            assert summary["error"] == "non-finite objective at epoch 0"
            assert "pruned_at" not in summary


def test_every_trial_records_its_runs_id_and_no_url_offline(mixed_study: MixedStudy) -> None:
    ids = set()
    for trial, run in runs_by_trial(mixed_study):
        assert run.id
        assert trial.user_attrs["wandb_run_id"] == run.id  # pruned and failed trials too
        assert "wandb_url" not in trial.user_attrs
        ids.add(run.id)
    assert len(ids) == len(mixed_study.study().trials)


def test_run_prints_the_sync_command_and_no_wandb_warning(mixed_study: MixedStudy) -> None:
    assert f"wandb sync {mixed_study.runs / 'wandb'}/offline-run-*" in mixed_study.out
    assert "anonymous" not in mixed_study.out
    assert "URL not available" not in mixed_study.out
    assert "Traceback" not in mixed_study.out  # a diverged trial is reported in one line
    assert "non-finite objective at epoch 0" in mixed_study.out


def test_run_attrs_of_an_online_run_add_its_url() -> None:
    class Run:
        id, offline, url = "abc123", False, "https://wandb.ai/e/p/runs/abc123"

    class Logger:
        experiment = Run()

    assert tracking.run_attrs(Logger()) == {
        "wandb_run_id": "abc123",
        "wandb_url": "https://wandb.ai/e/p/runs/abc123",
    }
    assert tracking.run_attrs(None) == {}


class Boom(L.Callback):
    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")


def test_a_trial_that_raises_closes_its_run_with_the_error_and_keeps_its_id(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    overrides = [a for a in mixed_overrides(runs) if a != "--set"]
    cfg = load_config(DEFAULT_CONFIG, overrides=[*overrides, "name=boom"])
    study = optuna.create_study(direction="maximize")
    for _ in range(5):
        trial = study.ask()  # trial 4
    spec = TrialSpec(cfg, {"model.lr": 0.1}, tmp_path / "trial-4", 4, "trial-4",
                     trial=TrialRef("memory", study.study_name, 4))  # fmt: skip
    result = train_run(spec, trial=trial, wandb_mode="offline", callbacks=[Boom()])
    assert result.state == "failed" and result.error == "RuntimeError: boom"
    assert study.trials[4].state == optuna.trial.TrialState.FAIL
    (run_dir,) = (runs / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert trial.user_attrs["wandb_run_id"] == run.id
    assert run.tags == ["boom", "failed"] and run.exit_code == 1
    assert run.config["trial"] == 4 and run.config["seed"] == 4
    assert run.summary["state"] == "failed"
    assert run.summary["error"] == "RuntimeError: boom"
    assert run.summary["epochs"] == 0 and "seconds" in run.summary
    assert "val/acc" not in run.summary and "best_epoch" not in run.summary
