"""The overfitting view of every run: `train_eval/...` (the training split evaluated like
validation, from the kept checkpoint), the gaps to the kept epoch's validation, and the expected
calibration error (`val/ece` each epoch, `test/ece` at the end).

Each value is checked against a NumPy computation written here from the definitions (not
torchmetrics again) on the run's own checkpoint and splits; a run alone and a population's
member store them on the Optuna trial, in metrics.csv and in the W&B summary; a pruned run has
its training-split figures but no test; a diverged one has neither. Real Lightning, SQLite and
W&B offline on a tiny CNN over digits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from regzoo.datamodules import create_datamodule
from regzoo.studies.cli.main import main
from regzoo.studies.trial.metrics import read_metrics
from regzoo.zoo import load_model
from regzoo.zoo.metrics import ECE_BINS, calibration_error, calibration_errors, calibration_metric
from tests.conftest import DEFAULT_CONFIG
from tests.studies.conftest import MixedStudy
from tests.studies.wandb_records import read_run

STUDY = "cnn-digits"
TINY = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.accelerator=cpu",
    "confirm=null",
    "model.channels=[4, 8]",
    "model.hidden=[16]",
    "pruner.name=none",
    "early_stopping=null",
]
FINAL = ("train_eval/acc", "train_eval/loss", "gap/acc", "gap/loss", "val/ece", "test/ece")


def numpy_ece(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE from its definition: the samples' share-weighted mean over equal-width
    confidence bins of |accuracy − mean confidence|. A bin holds the confidences from its left
    edge up to the next (a confidence of exactly 1.0 is a bin of its own, as in torchmetrics)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    which = np.searchsorted(np.linspace(0.0, 1.0, bins + 1), confidence, side="right") - 1
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def numpy_metrics(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Cross-entropy, accuracy and ECE of float64 logits, from their definitions."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    return {
        "loss": float(-log_probs[np.arange(len(y)), y].mean()),
        "acc": float((logits.argmax(axis=1) == y).mean()),
        "ece": numpy_ece(probs, y),
    }


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_calibration_error_equals_numpy(scale: float) -> None:
    """Logits of any scale (0.3: every logit inside [0, 1], which torchmetrics would read as
    probabilities if they were handed over as they are)."""
    gen = torch.Generator().manual_seed(int(scale * 10))
    logits = torch.rand(600, 10, generator=gen) * scale
    y = torch.randint(0, 10, (600,), generator=gen)
    probs = logits.double().softmax(-1).numpy()
    assert calibration_error(logits, y) == pytest.approx(numpy_ece(probs, y.numpy()), abs=1e-6)


def test_calibration_errors_bin_each_model_on_its_own() -> None:
    """A population's members binned at once: each member's ECE is its own NumPy ECE, and the
    lone `calibration_error` of its logits (and the logits of TorchMetrics' own metric class,
    which lone runs update batch by batch, agree with it too)."""
    gen = torch.Generator().manual_seed(7)
    logits = (
        torch.randn(5, 300, 4, generator=gen) * torch.tensor([0.1, 1, 3, 10, 100])[:, None, None]
    )
    y = torch.randint(0, 4, (300,), generator=gen)
    errors = calibration_errors(logits, y)
    assert errors.shape == (5,)
    for k in range(5):
        probs = logits[k].double().softmax(-1).numpy()
        assert float(errors[k]) == pytest.approx(numpy_ece(probs, y.numpy()), abs=1e-6)
        assert calibration_error(logits[k], y) == pytest.approx(float(errors[k]), abs=1e-7)
        metric = calibration_metric(4)
        for part in range(3):  # as validation batches arrive
            rows = slice(100 * part, 100 * (part + 1))
            metric.update(logits[k, rows].softmax(-1), y[rows])
        assert float(metric.compute()) == pytest.approx(float(errors[k]), abs=1e-6)
    assert len({round(float(e), 6) for e in errors}) == 5  # five models, five values


def run_study(root: Path, *extra: str) -> optuna.Study:
    url = f"sqlite:///{root / 'studies.db'}"
    sets = [f"--set={o}" for o in [*TINY, f"runs_dir={root / 'runs'}"]]
    args = ["run", str(DEFAULT_CONFIG), "--storage", url, "--trials", "2", *extra]
    assert main([*args, "--wandb", "offline", "--no-progress", *sets]) == 0
    return optuna.load_study(study_name=STUDY, storage=url)


def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A run's splits as its datamodule served them: the default config's data, split by its
    seed (0) whatever the trial's seed."""
    dm = create_datamodule("digits", batch_size=64, normalize="standard", split_seed=0)
    return {k: (x.numpy(), y.numpy()) for k, (x, y) in dm.splits.items()}


def logits_of(checkpoint: str, x: np.ndarray) -> np.ndarray:
    model = load_model(checkpoint)  # in eval mode
    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()


def check_against_numpy(trial: FrozenTrial) -> None:
    """The trial's stored figures equal NumPy's on its checkpoint, and its metrics.csv holds
    them: val/ece every epoch, the final row at the kept epoch."""
    attrs, data = trial.user_attrs, splits()
    for split, prefix in (("train", "train_eval"), ("test", "test")):
        expected = numpy_metrics(logits_of(attrs["checkpoint"], data[split][0]), data[split][1])
        for name, value in expected.items():
            assert attrs[f"{prefix}/{name}"] == pytest.approx(value, abs=2e-5), (prefix, name)
    rows = read_metrics(Path(attrs["checkpoint"]).parent / "metrics.csv")
    val_epochs = {e: m for e, m in rows.items() if "val/acc" in m}
    assert sorted(val_epochs) == [0, 1, 2]
    assert all(0.0 <= m["val/ece"] <= 1.0 for m in val_epochs.values())
    kept = max(val_epochs, key=lambda e: (val_epochs[e]["val/acc"], -val_epochs[e]["val/loss"]))
    val = numpy_metrics(logits_of(attrs["checkpoint"], data["val"][0]), data["val"][1])
    assert val_epochs[kept]["val/ece"] == pytest.approx(val["ece"], abs=2e-5)
    assert attrs["val/ece"] == pytest.approx(val["ece"], abs=2e-5)
    assert attrs["gap/acc"] == pytest.approx(attrs["train_eval/acc"] - val["acc"], abs=2e-5)
    assert attrs["gap/loss"] == pytest.approx(val["loss"] - attrs["train_eval/loss"], abs=2e-5)
    for key in ("train_eval/acc", "gap/acc", "gap/loss"):
        assert rows[kept][key] == pytest.approx(attrs[key])


def check_wandb(root: Path, trials: list[FrozenTrial]) -> None:
    runs = {r.name: r for r in map(read_run, (root / "runs" / "wandb").glob("offline-run-*"))}
    for t in trials:
        summary = runs[f"{STUDY}-trial-{t.number}"].summary
        for key in FINAL:
            assert summary[key] == pytest.approx(t.user_attrs[key]), key


@pytest.mark.parametrize("population", [1, 2])
def test_a_run_alone_and_a_member_store_gap_and_ece_equal_to_numpy(
    tmp_path: Path, population: int, capsys: pytest.CaptureFixture[str]
) -> None:
    study = run_study(tmp_path, "--population", str(population))
    out = capsys.readouterr().out
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    if population == 2:
        assert all(len(t.user_attrs["population"]) == 2 for t in trials)
    for t in trials:
        check_against_numpy(t)
    check_wandb(tmp_path, trials)
    assert "gap/acc=" in out


def test_a_pruned_run_has_its_training_split_figures_and_a_diverged_one_none(
    mixed_study: MixedStudy,
) -> None:
    by_state: dict[TrialState, Any] = {t.state: t for t in mixed_study.study().trials}
    pruned, failed = by_state[TrialState.PRUNED], by_state[TrialState.FAIL]
    assert {"train_eval/acc", "gap/acc", "gap/loss"} <= set(pruned.user_attrs)
    assert not any(k.startswith("test/") for k in pruned.user_attrs)
    assert not any(k.startswith(("train_eval/", "gap/")) for k in failed.user_attrs)
    assert math.isfinite(pruned.user_attrs["gap/acc"])
