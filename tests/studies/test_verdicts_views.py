"""A study's verdicts wherever the study is read: `regzoo list`, the report (summary.md,
index.html, the ablation's forest plot) and the W&B study run.

One tiny real study per module: two trials, `confirm: {top: 2, seeds: 2}` (so `regzoo run` ends
with a confirmation), then `regzoo ablate --seeds 2` of its best trial, whose dropout and weight
decay are the regularizers switched off. Every figure a view shows is recomputed here from the
stored runs, with scipy's t distribution, never through the code under test.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image
from scipy import stats

from regzoo.studies.cli.main import main
from regzoo.studies.loop.study import study_uid
from regzoo.studies.verdicts.ablate import read_ablation
from regzoo.studies.verdicts.plots import forest_plot
from regzoo.studies.verdicts.store import load_companion
from tests.conftest import DEFAULT_CONFIG
from tests.studies.conftest import MixedStudy
from tests.studies.wandb_records import (
    OfflineRun,
    media_file,
    offline_runs_of,
    read_run,
    run_record,
)

NAME = "cnn-digits"
SEEDS = 2
PNG = b"\x89PNG\r\n\x1a\n"
ROUNDED = 6e-5  # a figure printed with 4 decimals is within 5e-5 of the value


@dataclass
class VerdictStudy:
    url: str
    runs: Path
    out: str  # what `run` and `ablate` printed

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=NAME, storage=self.url)

    def companion(self) -> optuna.Study:
        companion = load_companion(self.study(), self.url)
        assert companion is not None
        return companion


@pytest.fixture(scope="module")
def verdict_study(tmp_path_factory: pytest.TempPathFactory) -> VerdictStudy:
    root = tmp_path_factory.mktemp("verdicts")
    url = f"sqlite:///{root / 'studies.db'}"
    overrides = [
        "trials=2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        f"runs_dir={root / 'runs'}",
        "model.optimizer=adam",
        "model.dropout=0.3",
        "model.weight_decay=0.01",
        "search={model.lr: {float: [3.0e-3, 3.0e-2], log: true}}",
        "early_stopping=null",  # with `checkpoint: last`: two regularizers to switch off, not 3
        "checkpoint=last",
        f"confirm={{top: 2, seeds: {SEEDS}}}",
    ]
    sets = [arg for item in overrides for arg in ("--set", item)]
    common = ["--storage", url, "--wandb", "offline"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main(["run", str(DEFAULT_CONFIG), *sets, *common, "--no-progress"])
        assert code == 0, buffer.getvalue()
        code = main(["ablate", NAME, "--seeds", str(SEEDS), *common])
    assert code == 0, buffer.getvalue()
    return VerdictStudy(url=url, runs=root / "runs", out=buffer.getvalue())


# ---- the figures, recomputed from the stored runs ------------------------------------------


def accuracies(companion: optuna.Study, labels: set[str]) -> dict[int, float]:
    """test/acc of the complete runs labelled `labels`, by seed."""
    return {
        t.user_attrs["seed"]: t.user_attrs["test/acc"]
        for t in companion.get_trials(states=(TrialState.COMPLETE,))
        if t.user_attrs.get("label") in labels
    }


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95% Student-t interval of the mean."""
    mean, n = statistics.mean(values), len(values)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def confirmed_trial(v: VerdictStudy) -> int:
    return int(json.loads(v.study().user_attrs["confirm"])["trials"][0])


def confirmed_values(v: VerdictStudy) -> list[float]:
    found = accuracies(v.companion(), {f"trial {confirmed_trial(v)}"})
    assert len(found) == SEEDS
    return list(found.values())


def effects(v: VerdictStudy) -> dict[str, tuple[float, float, float, float]]:
    """Each variant's effect (full minus variant, paired by seed): mean, CI low, CI high, p."""
    companion, trial = v.companion(), confirmed_trial(v)
    full = accuracies(companion, {f"trial {trial}", f"trial {trial} full"})
    out = {}
    for variant in ("no dropout", "no weight_decay", "all off"):
        runs = accuracies(companion, {f"trial {trial} {variant}"})
        assert sorted(runs) == sorted(full), variant
        diffs = [full[seed] - runs[seed] for seed in sorted(full)]
        mean, low, high = t_interval(diffs)
        with warnings.catch_warnings():  # equal differences on every seed: p is 0 or undefined
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_1samp(diffs, 0.0).pvalue)  # on the differences: paired
        out[variant] = (mean, low, high, p)
    return out


def close(cell: str, value: float) -> bool:
    """A printed cell against its value: both undefined, or equal to the printed precision."""
    if cell == "-":
        return math.isnan(value)
    return abs(float(cell) - value) <= ROUNDED


# ---- regzoo list -----------------------------------------------------------------------------


def test_list_hides_the_companion_and_shows_the_confirmed_mean_with_its_interval(
    verdict_study: VerdictStudy,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "--storage", verdict_study.url]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}.seeds" not in out
    (row,) = [line for line in out.splitlines() if f"│ {NAME} " in line]
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    found = re.fullmatch(r"(\S+) \[(\S+), (\S+)\] n=(\d+)", cells[-1])
    assert found, cells[-1]
    mean, low, high = t_interval(confirmed_values(verdict_study))
    assert all(close(cell, x) for cell, x in zip(found.groups(), (mean, low, high), strict=False))
    assert int(found[4]) == SEEDS


# ---- the report ------------------------------------------------------------------------------


def markdown_table(summary: str, title: str) -> tuple[list[dict[str, str]], str]:
    """The rows of the section `## title` (cells by column) and the text below its table."""
    section = summary.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, [c.strip() for c in line.strip("|").split("|")], strict=True))
            for line in lines[2:]]  # fmt: skip
    notes = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
    return rows, notes


@pytest.fixture(scope="module")
def report_dir(verdict_study: VerdictStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    args = ["report", NAME, "--storage", verdict_study.url, "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--wandb", "disabled"]) == 0
    return out


def test_report_shows_the_confirmation_recomputed_from_the_stored_runs(
    verdict_study: VerdictStudy, report_dir: Path
) -> None:
    summary = (report_dir / "summary.md").read_text()
    rows, notes = markdown_table(summary, f"Confirmed over {SEEDS} seeds")
    trial = confirmed_trial(verdict_study)
    assert rows[0]["configuration"] == f"trial {trial}" and len(rows) == 2
    mean, low, high = t_interval(confirmed_values(verdict_study))
    assert close(rows[0]["test/acc mean"], mean)
    assert close(rows[0]["95% CI low"], low) and close(rows[0]["95% CI high"], high)
    assert rows[0]["runs"] == f"{SEEDS}/{SEEDS}"
    (second,) = rows[1:]
    other = accuracies(verdict_study.companion(), {second["configuration"]})
    assert close(second["test/acc mean"], statistics.mean(other.values()))
    assert f"{rows[0]['configuration']} - {second['configuration']}: test/acc" in notes
    assert f"paired t-test over {SEEDS} seeds" in notes
    page = (report_dir / "index.html").read_text()
    assert f"<h2>Confirmed over {SEEDS} seeds</h2>" in page


def test_report_shows_the_ablation_and_its_forest_plot(
    verdict_study: VerdictStudy, report_dir: Path
) -> None:
    summary = (report_dir / "summary.md").read_text()
    trial = confirmed_trial(verdict_study)
    rows, _ = markdown_table(summary, f"Ablation of trial {trial}")
    by_variant = {row["variant"]: row for row in rows}
    assert list(by_variant) == ["full", "no dropout", "no weight_decay", "all off"]
    assert by_variant["no dropout"]["setting"] == "p=0.3"
    assert by_variant["full"]["effect"] == "-"
    for variant, (mean, low, high, p) in effects(verdict_study).items():
        row = by_variant[variant]
        assert close(row["effect"], mean), variant
        assert close(row["effect 95% CI low"], low) and close(row["effect 95% CI high"], high)
        assert close(row["p"], p), variant
    page = (report_dir / "index.html").read_text()
    assert f"<h2>Ablation of trial {trial}</h2>" in page
    assert "<img src='ablation.png'" in page and "](ablation.png)" in summary
    png = report_dir / "ablation.png"
    assert png.read_bytes()[:8] == PNG
    with Image.open(png) as image:
        image.verify()  # a whole, valid PNG, not just its signature
    with Image.open(png) as image:
        assert image.width > 400 and image.height > 150


def test_forest_plot_has_one_labelled_row_per_variant_at_its_effect(
    verdict_study: VerdictStudy,
) -> None:
    study = verdict_study.study()
    ablation = read_ablation(study, verdict_study.companion())
    assert ablation is not None
    ax = forest_plot(ablation).axes[0]
    label_at = {y: t.get_text() for y, t in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)}
    top_down = [label_at[y] for y in sorted(label_at, reverse=True)]
    assert top_down == [
        "no dropout (p=0.3)",
        "no weight_decay (0.01)",
        "all off (dropout, weight_decay)",
    ]
    bars = {label_at[c.lines[0].get_ydata()[0]]: c for c in ax.containers}  # errorbar's
    assert len(bars) == 3  # one point per variant, none for the full configuration
    for variant, (mean, low, high, _) in effects(verdict_study).items():
        (label,) = [k for k in bars if k.startswith(f"{variant} (")]
        point, _, (bar,) = bars[label].lines
        assert point.get_xdata()[0] == pytest.approx(100 * mean)  # percentage points
        (start, end) = bar.get_segments()[0]
        assert (start[0], end[0]) == pytest.approx((100 * low, 100 * high))
    zero = [line for line in ax.get_lines() if list(line.get_xdata()) == [0, 0]]
    assert zero, "no vertical line at 0"
    assert NAME in ax.get_title() and f"trial {ablation.trial}" in ax.get_title()
    assert f"{SEEDS} seeds" in ax.get_title()


# ---- the W&B study run -----------------------------------------------------------------------


def study_runs(v: VerdictStudy) -> list[Path]:
    """The study run's offline directories, oldest first: written after `run`, then `ablate`."""
    return offline_runs_of(v.runs / NAME / study_uid(v.study()) / "wandb", "study")


def table(run_dir: Path, run: OfflineRun, key: str) -> list[dict[str, Any]] | None:
    for row in run.history:
        if row.get(f"{key}/_type") == "table-file":
            data = media_file(run_dir, {"path": row[f"{key}/path"]})
            return [dict(zip(data["columns"], r, strict=True)) for r in data["data"]]
    return None


def test_wandb_study_run_holds_the_verdict_tables_and_the_confirmed_summary(
    verdict_study: VerdictStudy,
) -> None:
    after_run, after_ablate = study_runs(verdict_study)
    mean, low, high = t_interval(confirmed_values(verdict_study))
    trial = confirmed_trial(verdict_study)
    for run_dir in (after_run, after_ablate):  # `run` ended with the confirmation
        run = read_run(run_dir)
        assert run.summary["confirmed/test/acc"] == pytest.approx(mean, abs=1e-12)
        assert run.summary["confirmed/test/acc_low"] == pytest.approx(low, abs=1e-9)
        assert run.summary["confirmed/test/acc_high"] == pytest.approx(high, abs=1e-9)
        assert run.summary["confirmed/seeds"] == SEEDS
        assert run.summary["confirmed/trial"] == trial
        confirm = table(run_dir, run, "confirm")
        assert confirm is not None and confirm[0]["configuration"] == f"trial {trial}"
        assert confirm[0]["test/acc mean"] == pytest.approx(mean, abs=1e-12)
    assert table(after_run, read_run(after_run), "ablation") is None  # not ablated yet

    run = read_run(after_ablate)
    ablation = table(after_ablate, run, "ablation")
    assert ablation is not None
    assert [r["variant"] for r in ablation] == ["full", "no dropout", "no weight_decay", "all off"]
    assert ablation[0]["effect"] is None  # the full configuration has no effect of its own
    for row in ablation[1:]:
        effect, low_, high_, _ = effects(verdict_study)[row["variant"]]
        assert row["effect"] == pytest.approx(effect, abs=1e-12)
        assert row["effect 95% CI low"] == pytest.approx(low_, abs=1e-9)
        assert row["effect 95% CI high"] == pytest.approx(high_, abs=1e-9)
    image = {k.split("/")[-1]: v for r in run.history for k, v in r.items()
             if k.startswith("report/ablation/")}  # fmt: skip
    assert image["_type"] == "image-file"
    assert (after_ablate / "files" / image["path"]).read_bytes()[:8] == PNG


def test_verdict_runs_are_their_own_wandb_job_types(verdict_study: VerdictStudy) -> None:
    """A workspace filtered on job type `trial` shows the search alone."""
    companion = verdict_study.companion()
    wandb_dir = verdict_study.runs / "wandb"
    for kind in ("confirm", "ablate"):
        runs = [t for t in companion.trials if t.user_attrs.get("kind") == kind]
        names = {run_record(d).display_name for d in offline_runs_of(wandb_dir, kind)}
        assert names == {f"{NAME}-{kind}-{t.number}" for t in runs} and runs
    trials = {run_record(d).display_name for d in offline_runs_of(wandb_dir, "trial")}
    assert trials == {f"{NAME}-trial-{t.number}" for t in verdict_study.study().trials}


# ---- a study without verdicts ----------------------------------------------------------------


def test_a_study_without_verdicts_shows_none(
    mixed_study: MixedStudy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["report", mixed_study.name, "--storage", mixed_study.url, "--out", str(tmp_path)]
    assert main([*args, "--wandb", "disabled"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    page = (tmp_path / "index.html").read_text()
    for text in ("Confirmed over", "Ablation of", "ablation.png"):
        assert text not in summary and text not in page
    assert not (tmp_path / "ablation.png").exists()
    headings = [line for line in summary.splitlines() if line.startswith("## ")]
    best = mixed_study.study().best_trial
    assert headings == ["## Study", f"## Best trial: {best.number}", "## Top trials", "## Plots"]

    uid = study_uid(mixed_study.study())
    first = offline_runs_of(mixed_study.runs / mixed_study.name / uid / "wandb", "study")[0]
    run = read_run(first)
    assert not [k for k in run.summary if k.startswith("confirmed/")]
    logged = {k.split("/")[0] for row in run.history for k in row}
    assert not logged & {"confirm", "ablation"}
    assert "report/ablation/_type" not in {k for row in run.history for k in row}

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "--storage", mixed_study.url]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if "│ mixed " in line]
    assert row.strip("│ ").split("│")[-1].strip() == "-"  # the `confirmed` column
