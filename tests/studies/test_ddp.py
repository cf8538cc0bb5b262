"""DDP trials on CPU (gloo, 2 ranks), launched by torchrun exactly as on a GPU cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from studies.__main__ import main
from studies.config import load_config
from studies.runner import open_study
from studies.storage import open_storage
from tests.conftest import DEFAULT_CONFIG, REPO

TINY = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=4",
]
GOOD = {"model.lr": 1e-2, "model.dropout": 0.0, "model.optimizer": "adam"}
HOPELESS = {"model.lr": 1e-4, "model.dropout": 0.5, "model.optimizer": "sgd"}


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # finds tests.studies
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _records(out: Path, rank: int) -> list[dict[str, object]]:
    lines = (out / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_torchrun_ranks_train_rank_0s_trial_and_stop_together_when_pruned(in_tmp: Path) -> None:
    # Median pruning after one trial: the hopeless trial is pruned at its first epoch.
    overrides = [*TINY, "pruner.name=median", "pruner.n_startup_trials=1"]
    overrides += ["pruner.n_warmup_steps=0", "early_stopping=null"]
    url = (
        f"journal:///{in_tmp / 'studies.log'}"  # not RDB: optuna-integration's callback refuses it
    )
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
    assert sorted(p.name for p in (in_tmp / "runs" / cfg.name).iterdir()) == ["trial-0", "trial-1"]


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
