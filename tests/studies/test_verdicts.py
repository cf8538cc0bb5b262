"""`regzoo confirm` and `regzoo ablate` on a real tiny study: which runs they train (and never
train twice), what they record, and statistics equal to scipy's own on the stored values.

One study of three tiny trials, each with dropout, weight decay and early stopping (patience 1
and a `min_delta` no epoch can beat: every run with it stops after epoch 2 of 3), run with
`confirm: {top: 2, seeds: 2}`; then confirmed again (API, CLI, a third seed) and ablated, in
that order (module fixtures, each on the last one's storage). Real Lightning, SQLite, W&B off.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from scipy import stats

from regzoo.studies.cli.main import main
from regzoo.studies.loop.read import ranked_trials
from regzoo.studies.verdicts.ablate import Ablation
from regzoo.studies.verdicts.ablate import plan as ablate_plan
from regzoo.studies.verdicts.commands import ablate_study, confirm_study
from regzoo.studies.verdicts.confirm import Confirmation
from regzoo.studies.verdicts.stats import paired, summarize
from regzoo.studies.verdicts.tables import (
    OVERFITTING,
    ablation_rows,
    confirm_rows,
    interval,
    signed,
)
from tests.conftest import DEFAULT_CONFIG
from tests.reliability.conftest import TINY as TINY_TRIALS  # a tiny CNN, 3 batches

NAME = "verdicts"
MAX_EPOCHS = 3
STOPPED_AT = 2  # the epoch early stopping ends every run with it (STOPS_EARLY)
# Three complete trials, two of them to confirm; later overrides win.
TINY = [*TINY_TRIALS, f"trainer.max_epochs={MAX_EPOCHS}", "pruner.name=none"]
# Every trial's dropout and weight decay are > 0: the ablation's variants are known in advance.
REGULARIZED = (
    "search={model.lr: {float: [3.0e-3, 3.0e-2], log: true}, "
    "model.dropout: {float: [0.1, 0.5]}, "
    "model.weight_decay: {float: [1.0e-4, 1.0e-2], log: true}}"
)
# val/loss never improves on the first epoch's by 10: the run stops after the 2nd epoch.
STOPS_EARLY = "early_stopping={monitor: val/loss, patience: 1, min_delta: 10.0}"
VARIANTS = ["full", "no dropout", "no weight_decay", "no early stopping", "all off"]


def cli(*args: str) -> tuple[int, str, str]:
    """`regzoo ARGS` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def runs_of(url: str, name: str = NAME) -> list[FrozenTrial]:
    """The trials of the study's companion (its runs), all states."""
    return optuna.load_study(study_name=f"{name}.seeds", storage=url).get_trials()


def complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE]


def request(url: str, attr: str) -> dict[str, Any]:
    return json.loads(optuna.load_study(study_name=NAME, storage=url).user_attrs[attr])


def by_fingerprint(trials: list[FrozenTrial]) -> dict[str, FrozenTrial]:
    found: dict[str, FrozenTrial] = {}
    for t in complete(trials):
        key = t.user_attrs["fingerprint"]
        assert key not in found, f"fingerprint {key} trained twice"
        found[key] = t
    return found


def silent() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, width=200), text


@dataclass
class Step:
    """A verdict command and the companion's runs before and after it."""

    code: int
    out: str
    before: list[FrozenTrial]
    after: list[FrozenTrial]
    result: Any = None  # what the API returned (Confirmation, Ablation)
    recorded: dict[str, Any] | None = None  # the study's `confirm` or `ablate` attr after it

    @property
    def new(self) -> list[FrozenTrial]:
        return self.after[len(self.before) :]


@dataclass
class Made:
    url: str
    runs: Path
    step: Step

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=NAME, storage=self.url)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """`regzoo run` of three trials with `confirm: {top: 2, seeds: 2}`."""
    root = tmp_path_factory.mktemp("verdicts")
    url = f"sqlite:///{root / 'studies.db'}"
    sets = [*TINY, f"name={NAME}", f"runs_dir={root / 'runs'}", REGULARIZED, STOPS_EARLY]
    sets.append("confirm={top: 2, seeds: 2}")
    code, out, err = cli(
        "run", str(DEFAULT_CONFIG), "--trials", "3", "--storage", url, "--wandb", "disabled",
        "--no-progress", *(f"--set={s}" for s in sets),
    )  # fmt: skip
    assert code == 0, out[-3000:] + err[-3000:]
    return Made(
        url, root / "runs", Step(code, out, [], runs_of(url), None, request(url, "confirm"))
    )


@pytest.fixture(scope="module")
def confirmed(made: Made) -> Step:
    """The same confirmation through the API."""
    before = runs_of(made.url)
    console, text = silent()
    result = confirm_study(made.study(), made.url, top=2, seeds=2, console=console)
    recorded = request(made.url, "confirm")
    return Step(0, text.getvalue(), before, runs_of(made.url), result, recorded)


@pytest.fixture(scope="module")
def reconfirmed(made: Made, confirmed: Step) -> Step:
    """Again through the CLI, the seeds and top from the study's config."""
    before = runs_of(made.url)
    code, out, err = cli("confirm", NAME, "--storage", made.url, "--wandb", "disabled")
    assert code == 0, out[-3000:] + err[-3000:]
    return Step(code, out, before, runs_of(made.url), recorded=request(made.url, "confirm"))


@pytest.fixture(scope="module")
def three_seeds(made: Made, reconfirmed: Step) -> Step:
    before = runs_of(made.url)
    args = ("confirm", NAME, "--seeds", "3", "--storage", made.url, "--wandb", "disabled")
    code, out, err = cli(*args)
    assert code == 0, out[-3000:] + err[-3000:]
    return Step(code, out, before, runs_of(made.url), recorded=request(made.url, "confirm"))


@pytest.fixture(scope="module")
def ablated(made: Made, three_seeds: Step) -> Step:
    """The best trial ablated with the first two of the confirmation's three seeds."""
    before = runs_of(made.url)
    console, text = silent()
    result = ablate_study(made.study(), made.url, seeds=2, console=console)
    recorded = request(made.url, "ablate")
    return Step(0, text.getvalue(), before, runs_of(made.url), result, recorded)


def test_run_with_a_confirm_key_ends_with_top_times_seeds_runs(made: Made) -> None:
    runs = made.step.after
    assert len(runs) == 4 and len(complete(runs)) == 4
    assert f"confirm {NAME}: 2 configuration(s) x 2 seeds" in made.step.out
    assert "4 of 4 run(s) to train" in made.step.out
    recorded = made.step.recorded
    assert recorded is not None
    assert sorted(by_fingerprint(runs)) == sorted(
        fp for seeds in recorded["runs"].values() for fp in seeds.values()
    )


def test_confirm_retrains_the_top_trials_with_new_paired_seeds(made: Made, confirmed: Step) -> None:
    c: Confirmation = confirmed.result
    study = made.study()
    top = [t.number for t in ranked_trials(study)[:2]]
    assert [cand.trial for cand in c.candidates] == top
    runs = complete(confirmed.after)
    assert len(runs) == 2 * 2
    assert len(set(c.seeds)) == 2
    seed = json.loads(study.user_attrs["config"])["seed"]
    assert not set(c.seeds) & {seed + t.number for t in study.trials}  # trial n: seed + n
    seeds_by_trial: dict[int, list[int]] = {}
    for run in runs:
        assert run.user_attrs["source_trial"] in top
        seeds_by_trial.setdefault(run.user_attrs["source_trial"], []).append(run.user_attrs["seed"])
    assert {k: sorted(v) for k, v in seeds_by_trial.items()} == {n: sorted(c.seeds) for n in top}
    for cand in c.candidates:  # each candidate's runs are its own trial's, by seed
        assert {s: r.user_attrs["source_trial"] for s, r in cand.runs.items()} == dict.fromkeys(
            c.seeds, cand.trial
        )
        assert all(r.user_attrs["seed"] == s for s, r in cand.runs.items())


def stored_acc(runs: list[FrozenTrial], trial: int, seeds: list[int]) -> list[float]:
    """The stored test/acc of `trial`'s runs, in seed order, read from the trials themselves."""
    by_seed = {
        r.user_attrs["seed"]: r.user_attrs["test/acc"]
        for r in complete(runs)
        if r.user_attrs["source_trial"] == trial and "variant" not in r.user_attrs
    }
    return [by_seed[s] for s in seeds]


def test_confirm_statistics_equal_scipys(confirmed: Step) -> None:
    c: Confirmation = confirmed.result
    values = [stored_acc(confirmed.after, cand.trial, c.seeds) for cand in c.candidates]
    for cand, x in zip(c.candidates, values, strict=True):
        s = cand.summary("test/acc", c.seeds)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
        assert s.n == len(c.seeds)
        assert s.mean == pytest.approx(np.mean(x))
        assert s.std == pytest.approx(np.std(x, ddof=1))
        assert (s.low, s.high) == pytest.approx((ci.low, ci.high))
    d = c.comparison("test/acc")
    assert d is not None
    scipy_d = stats.ttest_rel(values[0], values[1])
    ci = scipy_d.confidence_interval(0.95)
    assert d.n == len(c.seeds)
    assert d.mean == pytest.approx(np.mean(np.subtract(values[0], values[1])))
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    assert d.pvalue == pytest.approx(scipy_d.pvalue, nan_ok=True)
    assert f"trial {c.candidates[0].trial} - trial {c.candidates[1].trial}" in confirmed.out


def test_the_model_card_shows_the_confirmed_accuracy_gap_and_ece_with_intervals(
    made: Made, confirmed: Step, tmp_path: Path
) -> None:
    c: Confirmation = confirmed.result
    best = c.candidates[0]
    out = tmp_path / "hub"
    code, _, err = cli("export", NAME, "--format", "hub", "--out", str(out), "--storage", made.url)
    assert code == 0, err
    card = (out / "README.md").read_text()
    assert f"### Confirmed over {len(c.seeds)} new seeds" in card
    for metric in ("test/acc", *OVERFITTING):
        assert f"| {metric} | {interval(best.summary(metric, c.seeds))} |" in card, metric
    trial = made.study().trials[best.trial]
    assert f"| gap/acc | {trial.user_attrs['gap/acc']:.4g} |" in card  # the single run's


@pytest.mark.parametrize("metric", OVERFITTING)
def test_confirm_shows_the_gap_and_ece_of_every_run_with_scipys_interval(
    confirmed: Step, metric: str
) -> None:
    c: Confirmation = confirmed.result
    for cand, row in zip(c.candidates, confirm_rows(c), strict=True):
        x = [cand.runs[s].user_attrs[metric] for s in c.seeds]  # every run stores it
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
        s = cand.summary(metric, c.seeds)
        assert (s.mean, s.low, s.high) == pytest.approx((np.mean(x), ci.low, ci.high))
        assert row[f"{metric} [95% CI]"] == interval(s)


def test_a_confirmation_rerun_trains_nothing(
    made: Made, confirmed: Step, reconfirmed: Step
) -> None:
    assert confirmed.new == [] and reconfirmed.new == []  # API, then CLI: same command
    assert reconfirmed.after == reconfirmed.before
    assert "0 of 4 run(s) to train" in confirmed.out
    assert "0 of 4 run(s) to train" in reconfirmed.out
    assert made.step.recorded == confirmed.recorded == reconfirmed.recorded


def test_more_seeds_train_only_the_missing_seed_of_each_configuration(
    confirmed: Step, three_seeds: Step
) -> None:
    c: Confirmation = confirmed.result
    assert "2 of 6 run(s) to train" in three_seeds.out
    assert three_seeds.after[: len(three_seeds.before)] == three_seeds.before
    new = three_seeds.new
    assert [t.state for t in new] == [TrialState.COMPLETE] * 2
    third = max(c.seeds) + 1
    assert [t.user_attrs["seed"] for t in new] == [third, third]
    assert sorted(t.user_attrs["source_trial"] for t in new) == sorted(
        cand.trial for cand in c.candidates
    )
    recorded = three_seeds.recorded
    assert recorded is not None
    assert recorded["seeds"] == [*c.seeds, third]
    assert all(len(seeds) == 3 for seeds in recorded["runs"].values())


def test_ablate_switches_off_each_regularizer_and_reuses_the_confirm_runs(
    made: Made, three_seeds: Step, ablated: Step
) -> None:
    a: Ablation = ablated.result
    best = ranked_trials(made.study())[0].number
    recorded = ablated.recorded
    assert recorded is not None
    assert recorded["trial"] == a.trial == best
    assert [row["variant"] for row in recorded["rows"]] == VARIANTS
    assert [a.full.variant, *(v.variant for v in a.variants)] == VARIANTS
    assert "8 of 10 run(s) to train" in ablated.out
    assert len(ablated.new) == 8 and len(complete(ablated.new)) == 8  # 5 variants x 2 seeds - 2
    assert three_seeds.recorded is not None
    confirm_runs = three_seeds.recorded["runs"][str(best)]
    full = recorded["rows"][0]["runs"]
    assert full == {s: confirm_runs[s] for s in full}  # the same runs, looked up, not retrained
    done = by_fingerprint(ablated.after)  # each fingerprint trained once in all
    assert {done[fp].number for fp in full.values()} <= {t.number for t in three_seeds.after}
    assert all(t.user_attrs["variant"] != "full" for t in ablated.new)


def test_ablate_trial_plans_the_variants_of_the_trial_it_names(
    made: Made, plain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ablate --trial N` ablates trial N, recorded as its trial; a trial that is not complete
    exits 2 in one line that lists the complete ones, before any companion study exists."""
    study = made.study()
    second = ranked_trials(study)[1]
    _, trial, points, request = ablate_plan(study, 2, second.number)
    assert trial.number == request["trial"] == second.number
    assert {p.attrs["source_trial"] for p in points} == {second.number}
    args = ["ablate", "plain", "--trial", "7", "--storage", plain, "--wandb", "disabled"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trial" in err and "7" in err, err
    assert optuna.get_all_study_names(storage=optuna.storages.RDBStorage(plain)) == ["plain"]


def test_no_early_stopping_trains_every_epoch_and_keeps_the_last(ablated: Step) -> None:
    a: Ablation = ablated.result
    rows = {row.variant: row for row in [a.full, *a.variants]}
    for name in ("no early stopping", "all off"):
        for run in rows[name].runs.values():
            assert run.user_attrs["epochs"] == MAX_EPOCHS, name
            checkpoint = Path(run.user_attrs["checkpoint"])
            assert checkpoint.name == "last.ckpt" and checkpoint.is_file(), name
    for name in ("full", "no dropout", "no weight_decay"):  # early stopping on: it did stop
        for run in rows[name].runs.values():
            assert run.user_attrs["epochs"] == STOPPED_AT, name
            assert Path(run.user_attrs["checkpoint"]).name == "best.ckpt", name


@pytest.mark.parametrize("metric", ["test/acc", "gap/acc", "test/ece"])
def test_ablation_effects_equal_scipys_paired_test(ablated: Step, metric: str) -> None:
    """The effect on test accuracy, and on the overfitting view beside it."""
    a: Ablation = ablated.result
    done = by_fingerprint(ablated.after)
    assert ablated.recorded is not None
    recorded = {row["variant"]: row["runs"] for row in ablated.recorded["rows"]}
    full = [done[recorded["full"][str(s)]].user_attrs[metric] for s in a.seeds]
    for row in a.variants:
        values = [done[recorded[row.variant][str(s)]].user_attrs[metric] for s in a.seeds]
        effect = a.effect(row, metric)
        scipy_d = stats.ttest_rel(full, values)
        ci = scipy_d.confidence_interval(0.95)
        assert effect.n == len(a.seeds), row.variant
        assert effect.mean == pytest.approx(np.mean(np.subtract(full, values))), row.variant
        assert (effect.low, effect.high) == pytest.approx((ci.low, ci.high)), row.variant
        assert effect.pvalue == pytest.approx(scipy_d.pvalue, nan_ok=True), row.variant
        if metric != "test/acc":
            cell = ablation_rows(a)[1 + a.variants.index(row)][f"{metric} effect [95% CI]"]
            assert cell == signed(effect)
    # what each regularizer bought, in words: accuracy, gap and ECE
    assert (
        f"dropout ({a.variants[0].setting}) bought {signed(a.effect(a.variants[0]))} test/acc"
        in (ablated.out.replace("\n", " "))
    )


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-trial study with no regularizer at all (dropout 0, no penalty, and a search that
    replaces the default one's augmentations), no early stopping, the last epoch kept; its URL."""
    root = tmp_path_factory.mktemp("plain")
    url = f"sqlite:///{root / 'studies.db'}"
    sets = [
        *TINY, "trainer.max_epochs=1", "name=plain", f"runs_dir={root / 'runs'}",
        "search={model.lr: {float: [3.0e-3, 3.0e-2], log: true}}", "model.dropout=0.0",
        "early_stopping=null", "checkpoint=last",
    ]  # fmt: skip
    code, out, err = cli(
        "run", str(DEFAULT_CONFIG), "--trials", "1", "--storage", url, "--wandb", "disabled",
        "--no-progress", *(f"--set={s}" for s in sets),
    )  # fmt: skip
    assert code == 0, out[-3000:] + err[-3000:]
    return url


def test_ablating_a_trial_without_regularizers_exits_2_and_trains_nothing(
    plain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ablate", "plain", "--seeds", "2", "--storage", plain, "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "trial 0" in err and "nothing to switch off" in err
    storage = optuna.storages.RDBStorage(plain)
    assert optuna.get_all_study_names(storage=storage) == ["plain"]  # no companion created
    assert "ablate" not in optuna.load_study(study_name="plain", storage=storage).user_attrs


def test_confirm_of_an_unknown_study_exits_2_with_one_line(
    plain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["confirm", "nope", "--storage", plain, "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "'nope'" in err, err
    storage = optuna.storages.RDBStorage(plain)
    assert optuna.get_all_study_names(storage=storage) == ["plain"]


@pytest.mark.parametrize("stored", [None, {"name": "old", "model": {"name": "cnn"}}])
def test_a_study_without_a_readable_config_exits_2_with_one_line(
    stored: dict[str, Any] | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study made by another tool (no config) or an older regzoo (a config today's schema
    refuses): one line, and no companion study."""
    url = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="old", storage=url)
    if stored is not None:
        study.set_user_attr("config", json.dumps(stored))
    study.add_trial(optuna.trial.create_trial(value=1.0))
    for command in ("confirm", "ablate"):
        assert main([command, "old", "--storage", url, "--wandb", "disabled"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'old'" in err and "regzoo run" in err, err
    assert optuna.get_all_study_names(storage=url) == ["old"]


@pytest.mark.parametrize("command", ["confirm", "ablate"])
def test_one_seed_is_refused_before_anything_runs(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "any", "--seeds", "1"])
    assert exit_.value.code == 2
    assert "--seeds: must be >= 2" in capsys.readouterr().err


# --- stats: scipy's answers on random data, and the degenerate cases ------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_summarize_equals_scipy(n: int) -> None:
    x = np.random.default_rng(n).normal(0.9, 0.03, n)
    s = summarize(list(x))
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert s.n == n
    assert s.mean == pytest.approx(np.mean(x))
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert (s.low, s.high) == pytest.approx((ci.low, ci.high))
    assert s.low < s.mean < s.high


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_paired_equals_scipy(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    a, b = rng.normal(0.9, 0.03, n), rng.normal(0.88, 0.03, n)
    d = paired(list(a), list(b))
    scipy_d = stats.ttest_rel(a, b)
    ci = scipy_d.confidence_interval(0.95)
    assert d.n == n
    assert d.mean == pytest.approx(np.mean(a - b))
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    assert d.pvalue == pytest.approx(scipy_d.pvalue)
    assert d.above_zero() == (ci.low > 0) and d.below_zero() == (ci.high < 0)


def test_identical_values_collapse_the_interval_to_the_mean_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a saturated accuracy is an answer, not a problem
        s = summarize([0.9861111] * 5)
        d = paired([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert s.std == pytest.approx(0.0, abs=1e-12)
    assert s.low == pytest.approx(s.mean) and s.high == pytest.approx(s.mean)
    assert s.mean == pytest.approx(0.9861111)
    assert (d.mean, d.low, d.high) == pytest.approx((0.0, 0.0, 0.0))
    assert np.isnan(d.pvalue)  # the same on every seed: no test
    assert not d.above_zero() and not d.below_zero()


def test_one_value_has_a_mean_and_no_interval() -> None:
    s = summarize([0.75])
    assert (s.n, s.mean) == (1, 0.75)
    assert all(np.isnan(v) for v in (s.std, s.low, s.high))
    d = paired([0.75], [0.5])
    assert (d.n, d.mean) == (1, 0.25)
    assert all(np.isnan(v) for v in (d.low, d.high, d.pvalue))
    assert np.isnan(summarize([]).mean)


def test_paired_values_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same seeds"):
        paired([0.9, 0.8, 0.7], [0.9, 0.8])
