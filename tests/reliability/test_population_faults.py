"""Faults in a population (`--population K`): K trials trained as one batched model.

A real SIGINT or SIGKILL sent to a `regzoo run --population 3` process while its members train,
and a member whose learning rate diverges. Each member is a trial of its own: Ctrl-C fails every
member, a killed worker's members are failed and retried by the next run (a member that stopped
early before the kill keeps its result and is not trained again), and a diverging member fails
alone while its peers train exactly as they would without it.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
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


def rerun(url: str, capsys: pytest.CaptureFixture[str], overrides: Sequence[str] = TINY) -> None:
    """The same study to its K trials, shrunk to end (`overrides`), in this process."""
    code = main(run_command(url, K, *as_sets(overrides), *POPULATION)[3:])  # after `-m regzoo`
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


# Adam steps of 1e-30 leave float32 weights as they are: val/loss never improves, and early
# stopping (patience 2) ends that member after 3 epochs. At a constant rate (a cosine schedule
# over 100000 epochs) the peers' val/loss keeps falling for about 90 epochs: they still train
# when the frozen member ends, and end by early stopping themselves in the rerun.
FROZEN_LR = 1.0e-30
STOP_LRS = (1.0e-3, FROZEN_LR, 2.0e-3)  # the frozen member in the middle
PATIENCE = 2
EARLY_STOPPING = [
    *TINY,
    "trainer.max_epochs=100000",
    f"early_stopping.patience={PATIENCE}",
    "pruner.name=none",
    "search={model.lr: {float: [1.0e-30, 1.0e-1], log: true}}",
]


@pytest.mark.slow  # 15-25 s on 2 cores: a population killed at its first early stop, a rerun
def test_a_member_stopped_early_survives_a_kill_of_its_population_and_is_not_trained_again(
    in_tmp: Path, tally: Tally, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    study = open_study(load_config(DEFAULT_CONFIG, overrides=EARLY_STOPPING), url)
    for lr in STOP_LRS:
        study.enqueue_trial({"model.lr": lr})
    proc = subprocess.Popen(
        run_command(url, K, *as_sets(EARLY_STOPPING), *POPULATION),
        cwd=in_tmp, env=cli_env(), text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    frozen = STOP_LRS.index(FROZEN_LR)  # its trial number: the enqueued trials come in order

    def stopped() -> bool:
        trials = load(url).trials
        return len(trials) > frozen and trials[frozen].state in FINISHED

    wait_for(stopped, proc, "the frozen member stops early", timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    tally.inject("SIGKILL of a population after one member stopped early")
    killed = load(url).trials
    running, complete, fail = TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAIL
    assert [t.state for t in killed] == [running, complete, running]
    member = killed[frozen]  # recorded when it stopped, not when its population would have ended
    assert member.params == {"model.lr": FROZEN_LR}
    assert member.user_attrs["epochs"] == PATIENCE + 1
    # Its seconds are its own too: `python -m benchmarks.population_studies` measures them.
    assert 0 <= member.user_attrs["test/acc"] <= 1
    assert (in_tmp / member.user_attrs["checkpoint"]).is_file()

    rerun(url, capsys, EARLY_STOPPING)  # the same command again: only the killed members train
    trials = load(url).trials
    assert trials[frozen] == member  # untouched: not failed, not retried, not trained again
    assert [t.state for t in trials] == [fail, complete, fail, complete, complete]
    for dead in (t for t in trials[:K] if t.number != frozen):  # failed, their params retried
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
        assert retry.params == dead.params and retry.state == complete
        # Each run's own record: the frozen member's epochs against a peer's, not its
        # population's (what a member's seconds cover is timed in benchmarks/, not here).
        assert member.user_attrs["epochs"] < retry.user_attrs["epochs"]
    assert len(trials) == K + 2  # the killed members' retries, nothing more
    finished = Counter(t.params["model.lr"] for t in trials if t.state in FINISHED)
    assert finished == Counter(STOP_LRS)  # every member finished exactly once
    assert_nothing_lost(trials, K, in_tmp / "runs")
    tally.trials("SIGKILL of a population after one member stopped early", len(trials))


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
        # An epoch's row each, then the kept epoch's final row (its train_eval and gaps).
        assert (
            len([row for row in with_diverging if "gap/acc" not in row]) == cfg.trainer.max_epochs
        )
        assert "gap/acc" in with_diverging[-1]
        assert_same_curves(with_diverging, metrics(spec.run_dir / "metrics.csv"))
        assert result.value == t.value


@pytest.fixture(autouse=True)
def _quiet_optuna_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="optuna")
