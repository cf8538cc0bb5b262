"""The study's own W&B run (job type "study"): written offline when `regzoo run` ends, refreshed by
`regzoo report`, read back from its `.wandb` log and the files beside it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies.cli.main import main
from regzoo.studies.experiments import get_experiment, run_experiment
from regzoo.studies.loop.study import study_uid
from regzoo.studies.results.wandb_study import log_study, run_id
from tests.studies.conftest import MixedStudy
from tests.studies.wandb_records import (
    OfflineRun,
    artifact_records,
    media_file,
    offline_runs_of,
    read_run,
    run_record,
)

STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
HUB_FILES = {"model.safetensors", "config.json", "README.md"}
FAKE_KEY = "f" * 40


def logged(run: OfflineRun, key: str) -> dict[str, Any]:
    """A media value logged under `key` (a table, image or chart table), from its history row."""
    for row in run.history:
        if f"{key}/_type" in row:
            return {k.split("/")[-1]: v for k, v in row.items() if k.startswith(f"{key}/")}
    raise AssertionError(f"{key} not logged; keys: {sorted(k for r in run.history for k in r)}")


def table(run_dir: Path, run: OfflineRun, key: str) -> list[dict[str, Any]]:
    value = logged(run, key)
    assert value["_type"] == "table-file"
    data = media_file(run_dir, value)
    return [dict(zip(data["columns"], row, strict=True)) for row in data["data"]]


def study_run_dirs(study: MixedStudy) -> list[Path]:
    uid = study_uid(study.study())
    return offline_runs_of(study.runs / study.name / uid / "wandb", "study")


def same(a: Any, b: Any) -> bool:
    if isinstance(b, float) and not math.isfinite(b):
        return a is None
    return bool(a == b)


def test_run_writes_the_study_run_with_trials_charts_images_best_and_model(
    mixed_study: MixedStudy,
) -> None:
    study = mixed_study.study()
    run_dir = study_run_dirs(mixed_study)[0]  # the first: written by `regzoo run`
    record, run = run_record(run_dir), read_run(run_dir)
    assert (record.job_type, record.run_group, record.run_id) == ("study", "mixed", run_id(study))
    assert run.name == "mixed-study" and run.exit_code == 0
    assert run.config["study"] == "mixed" and run.config["direction"] == "minimize"
    assert run.config["objective"] == "val/loss" and run.config["trainer"]["max_epochs"] == 2
    assert "study run mixed-" in mixed_study.out and "not written" not in mixed_study.out
    assert f"wandb sync {run_dir.parent}/offline-run-*" in mixed_study.out

    rows = table(run_dir, run, "trials")
    trials = study.get_trials()
    assert [r["number"] for r in rows] == [t.number for t in trials]
    for row, trial in zip(rows, trials, strict=True):
        assert row["state"] == STATE[trial.state]
        assert row["model.lr"] == trial.params["model.lr"]
        assert same(row["objective"], trial.value) or trial.value is None
        assert row["epochs"] == trial.user_attrs.get("epochs")
        assert row["pruned_at"] == trial.user_attrs.get("pruned_at")
        assert row["wandb_run_id"] == trial.user_attrs.get("wandb_run_id")
        if trial.state == TrialState.COMPLETE:
            assert row["test/acc"] == trial.user_attrs["test/acc"]
    assert {r["state"] for r in rows} == {"complete", "pruned", "failed"}

    # One complete trial: no importances (noted), a history point, a series per reporting trial.
    assert "need 2 or more" in run.summary["notes/importances"]
    history = table(run_dir, run, "optimization_history_table")
    (best,) = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {r["step"] for r in history} == {best.number}
    series = {r["lineKey"] for r in table(run_dir, run, "intermediate_values_table")}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert f"trial {best.number} (complete)" in series
    assert {f"trial {t.number} (pruned)" for t in pruned} <= series and pruned
    charts = {k.rsplit("/", 1)[-1] for k in run.config if k.startswith("_wandb/visualize/")}
    assert {"optimization_history", "intermediate_values"} <= charts

    images = {k.split("/")[1] for r in run.history for k in r if k.startswith("report/")}
    assert {"optimization_history", "intermediate_values", "learning_curves"} <= images
    for name in images:
        assert logged(run, f"report/{name}")["_type"] == "image-file"
        assert (run_dir / "files" / logged(run, f"report/{name}")["path"]).is_file()

    assert run.summary["best/number"] == best.number and run.summary["best/value"] == best.value
    assert run.summary["best/params/model.lr"] == best.params["model.lr"]
    assert run.summary["best/test/acc"] == best.user_attrs["test/acc"]
    assert run.summary["trials/pruned"] == len(pruned)

    (artifact,) = [a for a in artifact_records(run_dir) if a.type == "model"]  # + tables' own
    assert (artifact.type, artifact.name) == ("model", "mixed-best")
    assert "best" in list(artifact.aliases)
    assert {entry.path for entry in artifact.manifest.contents} == HUB_FILES
    assert json.loads(artifact.metadata)["trial"] == best.number


def test_report_refreshes_the_study_run_and_disabled_writes_none(
    mixed_study: MixedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = study_run_dirs(mixed_study)
    report = ["report", "mixed", "--storage", mixed_study.url]
    assert main([*report, "--out", str(tmp_path / "a"), "--wandb", "disabled"]) == 0
    assert study_run_dirs(mixed_study) == before
    assert main([*report, "--out", str(tmp_path / "b"), "--wandb", "offline"]) == 0
    out = capsys.readouterr().out
    (new,) = set(study_run_dirs(mixed_study)) - set(before)
    assert run_record(new).run_id == run_record(before[0]).run_id  # the same run, resumed
    assert "wandb sync" in out and "not written" not in out
    run = read_run(new)
    drawn = {p.stem for p in (tmp_path / "b").glob("*.png")}
    assert drawn and {k.split("/")[1] for r in run.history for k in r if "report/" in k} == drawn
    assert len(table(new, run, "trials")) == len(mixed_study.study().trials)


def _synthetic_study() -> optuna.Study:
    """Six in-memory trials over two parameters, one pruned: no training, no checkpoints."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="syn/1", direction="maximize")
    study.set_user_attr("objective", "val/acc")
    study.set_user_attr("config", json.dumps({"name": "syn/1", "seed": 3}))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1.0, 1.0)
        trial.suggest_categorical("kind", ["a", "b"])
        for epoch in range(3):
            trial.report(x + epoch, epoch)
        if trial.number == 4:
            raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=6)
    return study


def test_importances_bar_chart_no_key_and_no_environment_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    study = _synthetic_study()
    environ = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    assert log_study(study, mode="disabled", project="p", entity=None, save_dir=tmp_path) is None
    assert not any(tmp_path.iterdir())
    found = log_study(
        study, mode="offline", project="p", entity=None, save_dir=tmp_path, console=Console()
    )
    assert found == run_id(study) and "/" not in found
    assert {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} == environ
    (run_dir,) = offline_runs_of(tmp_path / "wandb", "study")
    run = read_run(run_dir)
    bars = {r["parameter"]: r["importance"] for r in table(run_dir, run, "importances_table")}
    assert set(bars) == {"x", "kind"} and math.isclose(sum(bars.values()), 1.0, rel_tol=1e-6)
    assert "_wandb/visualize/importances" in run.config
    history = table(run_dir, run, "optimization_history_table")
    best_so_far = [r["lineVal"] for r in history if r["lineKey"] == "best so far"]
    assert best_so_far == sorted(best_so_far)  # maximize: never decreases
    assert "trial 4 (pruned)" in {
        r["lineKey"] for r in table(run_dir, run, "intermediate_values_table")
    }
    assert run.summary["best/params/x"] == study.best_trial.params["x"]
    assert [a for a in artifact_records(run_dir) if a.type == "model"] == []  # no checkpoint
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaks == []


def test_an_experiment_logs_its_figure_and_table_to_its_study_run(in_tmp: Path) -> None:
    storage = f"sqlite:///{in_tmp / 'experiments.db'}"
    result = run_experiment(
        get_experiment("xor"), quick=True, storage=storage, wandb="offline",
        console=Console(quiet=True),
    )  # fmt: skip
    study = optuna.load_study(study_name="experiment-xor-quick", storage=storage)
    wandb_dir = result.figure.parent / study_uid(study) / "wandb"
    (run_dir,) = offline_runs_of(wandb_dir, "study")
    run = read_run(run_dir)
    assert run_record(run_dir).run_group == study.study_name
    assert logged(run, "experiment/figure")["_type"] == "image-file"
    rows = table(run_dir, run, "experiment/table")
    assert [next(iter(r.values())) for r in rows] == [next(iter(r.values())) for r in result.rows]
    assert len(table(run_dir, run, "trials")) == len(study.trials)
