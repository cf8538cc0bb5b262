"""`Population` in a plain Lightning Trainer: no study around it, members out as ordinary models.

The float64 equivalence of the batched update and each optimizer alone is
test_population_equivalence.py's; here a member trained by `Trainer.fit(population)` is compared
with the same model trained by `Trainer.fit(model)`.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from regzoo.zoo import Classifier, Population, create_model, load_model, save_pretrained
from tests.zoo.helpers import (
    TRAIN_ONLY,
    learnable_data,
    loader,
    own_rng_one_thread,  # noqa: F401 (a fixture)
    trainer,
)

pytestmark = pytest.mark.usefixtures("own_rng_one_thread")

SHAPE = (5,)
LRS = (0.3, 0.1, 0.03, 0.01)
# Each member its own optimizer and schedule too: what a population may vary per member.
KINDS: tuple[dict[str, Any], ...] = (
    {"optimizer": "sgd"},
    {"optimizer": "momentum", "l2": 1e-2},
    {"optimizer": "adam", "scheduler": "step", "step_size": 1, "gamma": 0.5},
    {"optimizer": "adamw", "weight_decay": 0.1, "grad_clip": 0.5},
)
TOLERANCE = 1e-10
DOCS = Path(__file__).resolve().parents[2] / "docs" / "populations.md"


def fnns(*, double: bool = False, **kw: Any) -> list[Classifier]:
    """Four FNNs: member k with LRS[k], KINDS[k] and its own seed's initial weights."""
    models = []
    for k, (lr, kind) in enumerate(zip(LRS, KINDS, strict=True)):
        torch.manual_seed(k)
        model = create_model(
            "fnn", input_shape=SHAPE, num_classes=3, hidden=(6,), lr=lr, **kind, **kw
        )
        models.append(model.double() if double else model)
    return models


def data(n: int = 48, seed: int = 0) -> DataLoader:
    return loader(*learnable_data(SHAPE, n=n, seed=seed))


def states(models: list[Classifier]) -> list[dict[str, torch.Tensor]]:
    """Each model's parameters, copied."""
    return [{n: p.detach().clone() for n, p in m.named_parameters()} for m in models]


@TRAIN_ONLY
def test_a_plain_trainer_trains_every_member_its_own_way() -> None:
    models = fnns()
    before = states(models)
    population = Population(models)
    trainer(max_epochs=3).fit(population, data())
    after = population.members()
    for k, (model, init) in enumerate(zip(after, before, strict=True)):
        assert isinstance(model, Classifier) and not model.training
        assert model.hparams.lr == LRS[k]
        moved = max((model.state_dict()[n] - t).abs().max().item() for n, t in init.items())
        assert moved > 1e-3, f"member {k} did not train"
    weights = [m.state_dict()["net.2.weight"] for m in after]
    for a in range(len(after)):
        for b in range(a + 1, len(after)):
            assert not torch.allclose(weights[a], weights[b])
    assert states(models)[0]["net.1.0.weight"].equal(before[0]["net.1.0.weight"])  # untouched


@TRAIN_ONLY
def test_a_member_equals_the_same_model_trained_alone_in_float64() -> None:
    """Three epochs of three batches; member 1 stops after two, at its own max_epochs."""
    models = fnns(double=True)
    alone = [copy.deepcopy(m) for m in models]
    max_epochs = [None, 2, None, None]
    population = Population(models, max_epochs=max_epochs)
    trainer(max_epochs=3, precision="64-true").fit(population, data())
    assert population.stopped == {1} and population.active == [0, 2, 3]
    for k, model in enumerate(alone):
        trainer(max_epochs=max_epochs[k] or 3, precision="64-true").fit(model, data())
        got, want = population.member(k).state_dict(), model.state_dict()
        for name, t in want.items():
            gap = (got[name].double() - t.double()).abs().max().item()
            assert gap < TOLERANCE, f"member {k}, {name}: {gap:.2e}"


def test_each_members_metrics_are_logged_and_the_best_as_the_populations() -> None:
    population = Population(fnns())
    fit = trainer(max_epochs=2)
    fit.fit(population, data(), val_dataloaders=data(24, seed=1))
    logged = fit.callback_metrics
    for i in range(len(LRS)):
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert f"member_{i}/{key}" in logged
            assert float(logged[f"member_{i}/{key}"]) == pytest.approx(
                population.epoch_metrics[i][key]
            )
    val_acc = [population.epoch_metrics[i]["val/acc"] for i in range(len(LRS))]
    val_loss = [population.epoch_metrics[i]["val/loss"] for i in range(len(LRS))]
    assert float(logged["val/acc"]) == pytest.approx(max(val_acc))
    assert float(logged["val/loss"]) == pytest.approx(min(val_loss))


def test_batches_given_as_val_are_validated_as_lightnings_loop_would() -> None:
    """The fast path (no validation loop) gives the metrics the validation loop gives."""
    val = data(24, seed=1)
    looped = Population(fnns(), log_members=False)
    trainer(max_epochs=2).fit(looped, data(), val_dataloaders=val)
    fast = Population(fnns(), log_members=False, val=list(val))
    trainer(max_epochs=2, limit_val_batches=0).fit(fast, data())
    for i in range(len(LRS)):
        for key, value in looped.epoch_metrics[i].items():
            assert fast.epoch_metrics[i][key] == pytest.approx(value, abs=1e-6), (i, key)


class StopTheWorst(Population):
    """Stops the member of the highest validation loss after every epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, list[int], list[str]]] = []

    def members_epoch_end(self, epoch: int, metrics: dict[int, dict[str, float]]) -> None:
        self.seen.append((epoch, list(metrics), sorted(metrics[self.active[0]])))
        worst = max(metrics, key=lambda i: metrics[i]["val/loss"])
        self.stop(worst)


def test_a_subclass_stops_members_through_the_epoch_hook_and_they_keep_their_weights() -> None:
    population = StopTheWorst(fnns(), val=list(data(24, seed=1)), log_members=False)
    fit = trainer(max_epochs=10)
    fit.fit(population, data())
    assert fit.current_epoch == len(LRS)  # one member left per epoch; then no one trains
    assert [e for e, _, _ in population.seen] == [0, 1, 2, 3]
    assert [len(active) for _, active, _ in population.seen] == [4, 3, 2, 1]
    assert population.seen[0][2] == ["train/acc", "train/loss", "val/acc", "val/ece", "val/loss"]
    assert population.active == [] and population.stopped == set(range(len(LRS)))
    last = population.seen[-1][1][0]
    assert population.member(last).state_dict()["net.2.weight"].shape == (3, 6)
    with pytest.raises(ValueError, match="is not training"):
        population.stop(last)


def test_members_take_the_datamodules_normalization(tmp_path: Path) -> None:
    from regzoo import create_datamodule

    dm = create_datamodule("wine", batch_size=32, normalize="standard")
    models = [
        create_model(
            "fnn",
            input_shape=dm.input_shape,
            num_classes=dm.num_classes,
            normalize=dm.normalize,
            hidden=(8,),
            lr=lr,
        )
        for lr in (1e-3, 1e-2)
    ]
    population = Population(models, log_members=False)
    trainer(max_epochs=1).fit(population, datamodule=dm)
    shift = torch.as_tensor(dm.input_statistics()[1]["shift"], dtype=torch.float32)
    for model in population.members():
        assert model.pipeline.is_fitted and torch.allclose(model.pipeline.shift, shift)


def test_unfitted_statistics_and_mixed_precision_are_refused() -> None:
    models = fnns(normalize="standard")
    with pytest.raises(ValueError, match="member 0: normalize='standard' has no statistics"):
        trainer().fit(Population(models, val=[]), data())
    with pytest.raises(ValueError, match="precision='bf16-mixed'"):
        trainer(precision="bf16-mixed").fit(Population(fnns(), val=[]), data())
    with pytest.raises(ValueError, match="max_epochs: 2 values for 4 models"):
        Population(fnns(), max_epochs=[1, 2])


@TRAIN_ONLY
def test_a_member_round_trips_through_hub_export_and_a_checkpoint(tmp_path: Path) -> None:
    population = Population(fnns())
    trainer(max_epochs=2).fit(population, data())
    member = population.member(2)
    x = learnable_data(SHAPE, n=8, seed=3)[0]
    for saved in (save_pretrained(member, tmp_path / "hub"), _checkpoint(member, tmp_path)):
        loaded = load_model(saved)
        assert type(loaded) is type(member) and loaded.hparams == member.hparams
        for name, t in member.state_dict().items():
            assert loaded.state_dict()[name].equal(t), name
        with torch.no_grad():
            assert loaded(x).equal(member(x))


def _checkpoint(model: Classifier, tmp_path: Path) -> Path:
    """A Lightning checkpoint of the model alone, written without a Trainer."""
    path = tmp_path / "member.ckpt"
    ckpt: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    model.on_save_checkpoint(ckpt)  # the zoo model's name, which load_model reads
    torch.save(ckpt, path)
    return path


def test_the_docs_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/populations.md's example, shortened to 3 epochs: every member exported and loaded."""
    code = re.search(r"<!-- tested -->\n```python\n(.*?)```", DOCS.read_text(), re.S)
    assert code is not None, "docs/populations.md lost its tested example"
    source = code.group(1).replace("max_epochs=20", "max_epochs=3")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(source, str(DOCS), "exec"), scope)
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 8 and all(f.startswith("fnn-lr") for f in folders), folders
    assert isinstance(scope["model"], Classifier)
    assert os.path.isfile(tmp_path / folders[0] / "model.safetensors")
