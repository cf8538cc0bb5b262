"""Faults in a population (`--population K`): K trials trained as one batched model.

A real SIGINT or SIGKILL sent to a `regzoo run --population 3` process while its members train,
and a member whose learning rate diverges. Each member is a trial of its own: Ctrl-C fails every
member, a killed worker's members are failed and retried by the next run, and a diverging member
fails alone while its peers train exactly as they would without it.
"""

from __future__ import annotations

import csv
import io
import signal
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState
from rich.console import Console

from regzoo.studies import load_config, open_study, run_study
from regzoo.studies.cli.main import main
from regzoo.studies.population.train import train_population
from regzoo.studies.trial.spec import TrialSpec
from tests.conftest import DEFAULT_CONFIG, trials_folder
from tests.reliability.conftest import (
    ENDLESS,
    FINISHED,
    STUDY,
    TINY,
    Tally,
    as_sets,
    assert_nothing_lost,
    cli_env,
    load,
    run_command,
    running_trials,
    wait_for,
)

K = 3
POPULATION = ["--population", str(K)]


def start_endless_population(cwd: Path, url: str) -> subprocess.Popen[str]:
    """`regzoo run --population 3` on endless trials, returned once all three members run and
    one has reported an epoch (the population is training)."""
    proc = subprocess.Popen(
        run_command(url, K, *as_sets([*TINY, *ENDLESS]), *POPULATION),
        cwd=cwd, env=cli_env(), text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    def training() -> bool:
        members = running_trials(url)
        return len(members) == K and any(t.intermediate_values for t in members)

    wait_for(training, proc, "the population trains an epoch", timeout=120)
    return proc


def rerun(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The same study to its K trials, shrunk to end, in this process."""
    code = main(run_command(url, K, *as_sets(TINY), *POPULATION)[3:])  # after `python -m regzoo`
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]


def test_ctrl_c_mid_population_fails_every_member_and_a_rerun_finishes(
    in_tmp: Path, tally: Tally, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    proc = start_endless_population(in_tmp, url)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    tally.inject("SIGINT (Ctrl-C) to a population")
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err
    interrupted = load(url).trials
    assert [t.state for t in interrupted] == [TrialState.FAIL] * K  # none left RUNNING
    assert {t.user_attrs["error"] for t in interrupted} == {"interrupted (Ctrl-C / SIGINT)"}

    rerun(url, capsys)
    trials = load(url).trials
    assert trials[:K] == interrupted
    assert_nothing_lost(trials, K, in_tmp / "runs")
    tally.trials("SIGINT (Ctrl-C) to a population", len(trials))


def test_a_killed_population_is_failed_and_retried_by_the_next_run(
    in_tmp: Path, tally: Tally, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    proc = start_endless_population(in_tmp, url)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    tally.inject("SIGKILL of a population mid-training")
    killed = load(url).trials
    assert [t.state for t in killed] == [TrialState.RUNNING] * K  # nobody could tell them

    rerun(url, capsys)  # its worker is gone: the members fail and their parameters run again
    trials = load(url).trials
    assert [t.state for t in trials[:K]] == [TrialState.FAIL] * K
    for dead in trials[:K]:
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
        assert retry.params == dead.params and retry.state in FINISHED
    assert len(trials) == 2 * K  # the killed members and their retries, nothing more
    assert_nothing_lost(trials, K, in_tmp / "runs")
    tally.trials("SIGKILL of a population mid-training", len(trials))


FINE = (0.05, 0.02, 0.03)  # momentum SGD learning rates that train
# In float64 a learning rate of 1e9 keeps this loss finite for the few steps trained here; 1e200
# overflows the next forward pass.
DIVERGING = 1.0e200


def metrics(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def assert_same_curves(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert [sorted(row) for row in a] == [sorted(row) for row in b]
    for row_a, row_b in zip(a, b, strict=True):
        for key, value in row_a.items():
            assert row_b[key] == pytest.approx(value, rel=0, abs=1e-9), key


def test_a_diverging_member_fails_alone_and_leaves_its_peers_untouched(
    tmp_path: Path, tally: Tally
) -> None:
    cfg = load_config(
        DEFAULT_CONFIG,
        overrides=[
            *TINY,
            f"runs_dir={tmp_path / 'runs'}",
            "trainer.precision=64-true",  # peers compared to 1e-9: no float32 rounding
            "pruner.name=none",
            "early_stopping=null",
            "model.optimizer=momentum",
            "search={model.lr: {float: [1.0e-3, 1.0e+300], log: true}}",
        ],
    )
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = open_study(cfg, url)
    lrs = [FINE[0], DIVERGING, FINE[1], FINE[2]]  # a population of 3, then 1 to replace the failure
    for lr in lrs:
        study.enqueue_trial({"model.lr": lr})
    out = io.StringIO()
    run_study(cfg, storage=url, trials=K, population=K, wandb="disabled",
              console=Console(file=out, width=200), show_progress=False)  # fmt: skip
    tally.inject("loss NaN/inf in one member of a population (lr=1e200)")
    trials = load(url).trials
    assert [t.params["model.lr"] for t in trials] == lrs
    assert [t.state for t in trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE,
    ]  # fmt: skip
    error = trials[1].user_attrs["error"]
    assert error.startswith(("non-finite val/loss", "non-finite train/loss")), error
    assert "test/acc" not in trials[1].user_attrs  # a diverged model is never tested
    assert_nothing_lost(trials, K, tmp_path / "runs")
    tally.trials("loss NaN/inf in one member of a population (lr=1e200)", len(trials))

    # The same two peers again, without the diverging member: the same first member (whose
    # seed orders the batches), the same seeds and parameters.
    folder = trials_folder(tmp_path / "runs" / STUDY)
    peers = [trials[0], trials[2]]
    alone = tmp_path / "alone"
    specs = [
        TrialSpec(cfg, t.params, alone / f"trial-{t.number}", cfg.seed + t.number, f"alone-{i}")
        for i, t in enumerate(peers)
    ]
    results = train_population(specs, [None, None], [[], []])
    for t, spec, result in zip(peers, specs, results, strict=True):
        with_diverging = metrics(folder / f"trial-{t.number}" / "metrics.csv")
        assert len(with_diverging) == cfg.trainer.max_epochs
        assert_same_curves(with_diverging, metrics(spec.run_dir / "metrics.csv"))
        assert result.value == t.value


@pytest.fixture(autouse=True)
def _quiet_optuna_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="optuna")
