"""DDP trials on CPU (gloo, 2 ranks), launched by torchrun exactly as on a GPU cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from regzoo.studies import load_config, open_study
from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import open_storage
from tests.conftest import DEFAULT_CONFIG, REPO, trials_folder

TINY = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=4",
    "confirm=null",
    "model.channels=[4, 8]",
]
GOOD = {"model.lr": 1e-2, "model.dropout": 0.0, "model.optimizer": "adam"}
HOPELESS = {"model.lr": 1e-4, "model.dropout": 0.5, "model.optimizer": "sgd"}


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """torchrun with 2 ranks; on a timeout (pytest-timeout's or our own) torchrun and both ranks
    are killed, so that a hung group never outlives its test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # finds tests.studies
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.Popen(
        [*command, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the ranks go with it
    )
    try:
        out, err = proc.communicate(timeout=300)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _records(out: Path, rank: int) -> list[dict[str, object]]:
    lines = (out / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_torchrun_ranks_train_rank_0s_trial_and_stop_together_when_pruned(in_tmp: Path) -> None:
    # Median pruning after one trial: the hopeless trial is pruned at its first epoch.
    overrides = [*TINY, "pruner.name=median", "pruner.n_startup_trials=1"]
    overrides += ["pruner.n_warmup_steps=0", "early_stopping=null", "model.batchnorm=false"]
    overrides += [  # the enqueued parameters, and nothing else, are searched
        "search={model.lr: {float: [1.0e-5, 1.0], log: true}, model.dropout: {float: [0.0, 0.9]},"
        " model.optimizer: {choice: [sgd, adam]},"
        " model.weight_decay: {float: [1.0e-5, 1.0e-1], log: true}}"
    ]
    url = f"journal:///{in_tmp / 'studies.log'}"  # a journal file: ranks share no RDB lock
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides)
    study = open_study(cfg, url)
    for params in (GOOD, HOPELESS):  # fixed by rank 0's storage, never sampled by a rank
        study.enqueue_trial({**params, "model.weight_decay": 1e-3})
    out = in_tmp / "probe"
    out.mkdir()

    done = _torchrun(
        "-m", "tests.studies._ddp_probe", str(DEFAULT_CONFIG), url, str(out),
        "trials=2", *overrides, cwd=in_tmp,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = _records(out, 0), _records(out, 1)
    assert len(rank0) == len(rank1) == 2
    trials = optuna.load_study(study_name=cfg.name, storage=open_storage(url)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    for trial, mine, theirs in zip(trials, rank0, rank1, strict=True):
        assert mine["world_size"] == theirs["world_size"] == 2
        assert mine["hparams"] == theirs["hparams"]
        assert mine["hparams"]["lr"] == trial.params["model.lr"]
        assert (mine["epochs"], mine["pruned_at"]) == (theirs["epochs"], theirs["pruned_at"])
    assert rank0[0]["pruned_at"] is None and rank0[0]["epochs"] == 3
    assert rank0[1]["pruned_at"] == 0 and rank1[1]["epochs"] < 3  # both stopped early
    # One value per trial, reported by rank 0 alone; rank 1 wrote no trial folder of its own.
    assert all(len(t.values) == 1 for t in trials)
    assert sorted(trials[0].intermediate_values) == [0, 1, 2]
    assert sorted(trials[1].intermediate_values) == [0]
    assert sorted(p.name for p in trials_folder(in_tmp / "runs" / cfg.name).iterdir()) == [
        "trial-0",
        "trial-1",
    ]


# No time bound on the run itself: the trial's group keeps torch's 30-minute collective timeout,
# so a rank 0 that never hears of rank 1's failure hangs and pytest-timeout fails the test.
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("rank", "error"),
    [
        # rank 0 waits for rank 1 in that batch's gradient all-reduce
        (1, "RankFailed: rank 1: RuntimeError: CUDA out of memory (injected on rank 1)"),
        # rank 0's own error is recorded as in a single process; rank 1 stops waiting for it
        (0, "RuntimeError: CUDA out of memory (injected on rank 0)"),
    ],
    ids=["follower", "rank-0"],
)
def test_a_rank_failing_alone_fails_the_trial_and_the_study_goes_on(
    in_tmp: Path, rank: int, error: str
) -> None:
    overrides = [*TINY, "early_stopping=null"]
    url = f"journal:///{in_tmp / 'studies.log'}"
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides)
    study = open_study(cfg, url)
    for _ in range(2):
        study.enqueue_trial({**GOOD, "model.weight_decay": 1e-3})
    out = in_tmp / "probe"
    out.mkdir()

    # One rank alone runs out of memory at the first batch of trial 0's 2nd epoch; one finished
    # trial is asked for, so the study must go on to trial 1.
    done = _torchrun(
        "-m", "tests.studies._ddp_probe", str(DEFAULT_CONFIG), url, str(out),
        f"--fail={rank}:trial-0:1", "trials=1", *overrides, cwd=in_tmp,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    trials = optuna.load_study(study_name=cfg.name, storage=open_storage(url)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["error"] == error
    # Both ranks trained trial 1 together, to its end.
    rank0, rank1 = _records(out, 0), _records(out, 1)
    assert [r["trial"] for r in rank0] == [r["trial"] for r in rank1] == ["trial-1"]
    assert rank0[0]["world_size"] == rank1[0]["world_size"] == 2
    assert rank0[0]["hparams"] == rank1[0]["hparams"]
    assert rank0[0]["epochs"] == rank1[0]["epochs"] == 3
    assert len(trials[1].values) == 1 and Path(trials[1].user_attrs["checkpoint"]).is_file()


@pytest.mark.slow  # ~35 s: the parent, torchrun and two ranks each import torch and Lightning
def test_devices_per_trial_runs_each_trial_as_one_ddp_group(
    in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    sets = [f"--set={o}" for o in TINY]
    args = ["--trials", "2", "--devices-per-trial", "2", "--storage", url, "--wandb", "offline"]
    code = main(["run", str(DEFAULT_CONFIG), *args, *sets, "--no-progress"])
    out = capfd.readouterr().out
    assert code == 0, out
    trials = optuna.load_study(study_name="cnn-digits", storage=url).trials
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)
    for t in trials:
        assert t.state == TrialState.PRUNED or Path(t.user_attrs["checkpoint"]).is_file()
    assert "1 worker(s) x 2 device(s) per trial" in out
    assert len(re.findall(r"best trial \d+:", out)) == 1  # the parent's summary, once
    # One W&B run per trial: rank 1 never starts one.
    assert len(list((in_tmp / "runs" / "wandb").glob("offline-run-*"))) == 2
