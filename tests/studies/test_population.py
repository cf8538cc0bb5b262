"""Studies trained K trials at a time (`population: {size: K}`, `regzoo run --population K`).

Real Lightning, Optuna and SQLite on tiny CNNs over digits: the trial budget is met exactly,
peers prune each other within the first population, each member leaves a checkpoint that
reproduces its stored test metrics, trials that cannot share a model are grouped, TPE's
constant liar keeps one population's members apart, a model whose layers cannot be batched
falls back whatever it is called, and `--population 1` is the one-trial-per-Trainer path
unchanged.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from regzoo.datamodules import create_datamodule
from regzoo.studies import load_config, open_study
from regzoo.studies.cli.main import main
from regzoo.studies.executor.storage import open_storage
from regzoo.studies.loop.budget import FINISHED
from regzoo.studies.population.members import with_population
from regzoo.studies.population.pruning import PeerPruner
from regzoo.zoo import Classifier, load_model, register_model
from regzoo.zoo._registry import MODELS
from tests.conftest import DEFAULT_CONFIG, reproducible
from tests.studies.wandb_records import read_run

STUDY = "cnn-digits"  # the default config's name
TINY = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.accelerator=cpu",
    "confirm=null",
    "model.channels=[4, 8]",
    "model.hidden=[16]",
]
PEERS_PRUNE = "pruner={name: median, n_startup_trials: 0, n_warmup_steps: 0}"


def overrides(root: Path, *extra: str) -> list[str]:
    return [*TINY, f"runs_dir={root / 'runs'}", *extra]


def run(root: Path, trials: int, *extra: str, flags: tuple[str, ...] = ()) -> str:
    """`regzoo run` on the default config, shrunk, into `root`; its storage URL."""
    url = f"sqlite:///{root / 'studies.db'}"
    sets = [f"--set={o}" for o in overrides(root, *extra)]
    args = ["run", str(DEFAULT_CONFIG), "--storage", url, "--trials", str(trials)]
    code = main([*args, "--wandb", "disabled", "--no-progress", *sets, *flags])
    assert code == 0
    return url


def trials_of(url: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=open_storage(url)).trials


NORMALIZE_SEARCH = "search={data.normalize: {choice: [none, minmax, standard]}}"


def test_members_that_differ_in_normalize_share_a_population_each_with_its_own_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`none`, `minmax` and `standard` are each an elementwise shift and scale: trials that
    differ in them train as one population, each member normalizing with its own statistics
    of the shared training split, as the same model trained alone would (its checkpoint, tested
    on a datamodule of its own normalization, gives its stored test metrics)."""
    url = run(tmp_path, 4, NORMALIZE_SEARCH, "pruner.name=none", "population={size: 4}")
    capsys.readouterr()
    trials = trials_of(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(t.user_attrs["population"] == [0, 1, 2, 3] for t in trials)
    assert len({t.params["data.normalize"] for t in trials}) > 1
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides(tmp_path))
    tester = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    for t in trials:
        kind = t.params["data.normalize"]
        model = load_model(Path(t.user_attrs["checkpoint"]))
        assert model.hparams["normalize"] == kind
        options = {**cfg.data.options, "normalize": kind}
        dm = create_datamodule(cfg.data.name, seed=cfg.seed, split_seed=cfg.seed, **options)
        (tested,) = tester.test(model, datamodule=dm, verbose=False)
        assert tested["test/acc"] == pytest.approx(t.user_attrs["test/acc"], abs=1e-6), kind
        assert tested["test/loss"] == pytest.approx(t.user_attrs["test/loss"], rel=1e-5), kind


def test_a_population_study_finishes_the_trials_prunes_among_peers_and_tests_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = run(tmp_path, 10, PEERS_PRUNE, "population={size: 8}")
    capsys.readouterr()
    trials = trials_of(url)
    assert len(trials) == 10 and all(t.state in FINISHED for t in trials)  # 8 + 2, none running
    first, second = trials[:8], trials[8:]
    # One population, one Trainer each: every member names the same trials.
    assert all(t.user_attrs["population"] == list(range(8)) for t in first)
    assert all(t.user_attrs["population"] == [8, 9] for t in second)
    # No trial had finished before the first population: only its running peers could prune.
    states = {t.state for t in first}
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides(tmp_path))
    # The population's data options; digits' test split does not move with the seed.
    dm = create_datamodule(cfg.data.name, seed=cfg.seed, split_seed=cfg.seed, **cfg.data.options)
    tester = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        checkpoint = Path(t.user_attrs["checkpoint"])
        assert checkpoint.parent.name == f"trial-{t.number}"
        model = load_model(checkpoint)
        assert model.hparams["lr"] == t.params["model.lr"]  # the member's own model
        (tested,) = tester.test(model, datamodule=dm, verbose=False)
        assert tested["test/acc"] == pytest.approx(t.user_attrs["test/acc"], abs=1e-6)
        assert tested["test/loss"] == pytest.approx(t.user_attrs["test/loss"], rel=1e-5)


def record(url: str) -> list[dict[str, Any]]:
    """What two runs of the same trials must share: all but the clock, pid and folder."""
    return reproducible(trials_of(url))


def metrics_files(root: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in (root / "runs").rglob("metrics.csv")}


def test_population_1_is_the_one_trial_per_trainer_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--population 1`, over the default study's `population.size: 8` or a config's 4, runs
    the same trials as a config with `population.size: 1`: same parameters, values, attrs and
    metrics, exactly."""
    shrink = ("trainer.max_epochs=2", "pruner.name=median")
    plain = record(run(tmp_path / "plain", 2, *shrink, "population.size=1"))
    flag = record(run(tmp_path / "flag", 2, *shrink, flags=("--population", "1")))
    over = run(tmp_path / "over", 2, *shrink, "population={size: 4}", flags=("--population", "1"))
    capsys.readouterr()
    assert len(plain) == 2 and all(t["attrs"]["test/acc"] > 0 for t in plain)
    assert flag == plain  # floats compared exactly
    assert record(over) == plain
    assert metrics_files(tmp_path / "flag") == metrics_files(tmp_path / "plain")
    assert len(metrics_files(tmp_path / "plain")) == 2


ACTIVATION_SEARCH = (
    "search={model.activation: {choice: [relu, tanh]}, "
    "model.lr: {float: [1.0e-3, 1.0e-1], log: true}}"
)
OPTIMIZER_SEARCH = (
    "search={model.optimizer: {choice: [sgd, adam]}, "
    "model.scheduler: {choice: [none, cosine]}, model.lr: {float: [1.0e-3, 1.0e-1], log: true}}"
)


def test_trials_that_cannot_share_a_model_train_as_separate_populations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A search over the activation with population 4: each asked batch of 4 splits into one
    population per activation (members told together, recorded as one population)."""
    url = run(tmp_path, 8, ACTIVATION_SEARCH, "pruner.name=none", "trainer.max_epochs=2",
              flags=("--population", "4"))  # fmt: skip
    capsys.readouterr()
    trials = trials_of(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    batches = [trials[:4], trials[4:]]
    assert any(len({t.params["model.activation"] for t in b}) == 2 for b in batches)  # mixed
    for batch in batches:
        for activation in {t.params["model.activation"] for t in batch}:
            members = [t for t in batch if t.params["model.activation"] == activation]
            numbers = [t.number for t in members]
            assert all(t.user_attrs["population"] == numbers for t in members), activation
        told = sorted(batch, key=lambda t: t.datetime_complete)  # one population after another
        runs = [k for k, _ in itertools.groupby(t.params["model.activation"] for t in told)]
        assert len(runs) == len(set(runs)), runs


def test_members_with_their_own_optimizer_and_schedule_share_one_population(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Optimizer and scheduler kinds are each member's own: a batch of 4 mixing them is one
    population, and each member's checkpoint is a model of its own kinds."""
    url = run(tmp_path, 8, OPTIMIZER_SEARCH, "pruner.name=none", "trainer.max_epochs=2",
              flags=("--population", "4"))  # fmt: skip
    capsys.readouterr()
    trials = trials_of(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    kinds = {(t.params["model.optimizer"], t.params["model.scheduler"]) for t in trials}
    assert len(kinds) > 1
    for batch in (trials[:4], trials[4:]):
        numbers = [t.number for t in batch]
        assert all(t.user_attrs["population"] == numbers for t in batch)
    for t in trials:
        model = load_model(t.user_attrs["checkpoint"])
        assert model.hparams["optimizer"] == t.params["model.optimizer"]
        assert model.hparams["scheduler"] == t.params["model.scheduler"]


def test_a_members_offline_wandb_run_records_its_population_and_its_own_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    sets = [f"--set={o}" for o in overrides(tmp_path, "pruner.name=none", "trainer.max_epochs=2")]
    args = ["run", str(DEFAULT_CONFIG), "--storage", url, "--trials", "2", "--population", "2"]
    assert main([*args, "--wandb", "offline", "--no-progress", *sets]) == 0
    capsys.readouterr()
    trials = trials_of(url)
    runs = {r.name: r for r in map(read_run, (tmp_path / "runs" / "wandb").glob("offline-run-*"))}
    assert sorted(runs) == [f"{STUDY}-trial-0", f"{STUDY}-trial-1"]
    for t in trials:
        member = runs[f"{STUDY}-trial-{t.number}"]
        # Both members trained in one population, each on its own seed's batch order.
        assert member.config["population"] == {"size": 2}
        assert member.config["seed"] == t.number
        epochs = [row["epoch"] for row in member.history if "val/loss" in row]
        assert epochs == [0, 1]
        assert member.summary["state"] == "complete"
        assert member.summary["test/acc"] == t.user_attrs["test/acc"]
        assert member.exit_code == 0
    val = [[row["val/loss"] for row in runs[n].history if "val/loss" in row] for n in sorted(runs)]
    assert val[0] != val[1]  # each run logged its own member's metrics


LRS = [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3, 1.6e-2, 3.2e-2]
DROPOUTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
STARTUP = 10  # TPESampler's n_startup_trials: TPE proper from the 11th trial on


def test_tpe_proposes_distinct_members_within_one_population(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After TPE's random startup trials, 8 members asked at once on a 6 x 6 grid: without the
    constant liar TPE proposes the same few points again and again (1 to 4 distinct of 8 with
    seeds 0-19); with it, 8 distinct ones."""
    search = f"search={{model.lr: {{choice: {LRS}}}, model.dropout: {{choice: {DROPOUTS}}}}}"
    extra = (search, "pruner.name=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2")
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides(tmp_path, *extra))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = open_study(cfg, url)
    space = {
        "model.lr": CategoricalDistribution(LRS),
        "model.dropout": CategoricalDistribution(DROPOUTS),
    }
    points = list(itertools.product(LRS, DROPOUTS))
    for i in range(STARTUP):  # finished trials, as if trained: TPE's history
        lr, dropout = points[(7 * i) % len(points)]
        params = {"model.lr": lr, "model.dropout": dropout}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=i / 10))
    run(tmp_path, STARTUP + 8, *extra, flags=("--population", "8"))
    capsys.readouterr()
    population = trials_of(url)[STARTUP:]
    assert len(population) == 8 and all(t.state == TrialState.COMPLETE for t in population)
    numbers = [t.number for t in population]  # asked and trained together
    assert all(t.user_attrs["population"] == numbers for t in population)
    proposed = {tuple(sorted(t.params.items())) for t in population}
    assert len(proposed) == 8, sorted(proposed)


def test_a_model_that_cannot_be_batched_falls_back_with_one_line_and_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rnn = "model={name: rnn, cell: gru, hidden_size: 8, optimizer: adam, scheduler: cosine}"
    url = run(tmp_path, 2, rnn, "search={model.lr: {float: [1.0e-3, 1.0e-2], log: true}}",
              "pruner.name=none", "trainer.max_epochs=2", flags=("--population", "4"))  # fmt: skip
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "population" in line or "Trainer" in line]
    assert len(lines) == 1, out
    assert "'rnn' cannot be batched" in lines[0] and "one per Trainer" in lines[0], lines
    # Batched, a GRU fails every member (vmap cannot batch it): one Trainer each, they finish.
    assert [t.state for t in trials_of(url)] == [TrialState.COMPLETE] * 2


@pytest.mark.parametrize(
    ("precision", "flags"),
    [
        ("16-mixed", ("--set=population={size: 4}",)),
        ("bf16-mixed", ("--population", "4")),
        ("16-mixed", ("--population", "4", "--workers", "2")),  # refused before any worker
    ],
    ids=["config", "flag", "flag-workers"],
)
def test_a_population_with_mixed_precision_exits_2_with_one_line_and_writes_nothing(
    precision: str, flags: tuple[str, ...], in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["run", str(DEFAULT_CONFIG), "--wandb", "disabled", "--no-progress", "--trials", "2"]
    code = main([*args, f"--set=trainer.precision={precision}", *flags])
    err = capfd.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "population.size=4" in err and "trainer.precision" in err and precision in err, err
    assert not (in_tmp / "runs").exists()  # the default storage and runs folder: not created
    assert list(in_tmp.iterdir()) == []


def test_peer_pruner_compares_running_trials_at_the_same_step() -> None:
    """Two running trials at step 0: the worse one is pruned against the other, as a plain
    MedianPruner (which reads finished trials only) would not; a trial at a step no peer has
    reached is not pruned by its peers."""
    median = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    plain = optuna.create_study(direction="maximize", pruner=median)
    study = optuna.create_study(direction="maximize", pruner=PeerPruner(median))
    for s in (plain, study):
        good, bad = s.ask(), s.ask()
        good.report(0.9, step=0)
        bad.report(0.1, step=0)
        if s is plain:
            assert not bad.should_prune()  # nothing finished: nothing to compare with
            continue
        assert bad.should_prune() and not good.should_prune()
    ahead = study.ask()
    ahead.report(0.0, step=1)  # worse than anything, at a step no peer has reached
    assert not ahead.should_prune()
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING] * 3  # the view changed nothing
    assert [t.intermediate_values for t in trials] == [{0: 0.9}, {0: 0.1}, {1: 0.0}]
    # Once a peer reaches step 1 with a better value, the trial behind it there is pruned.
    good.report(0.8, step=1)
    assert ahead.should_prune()


def test_workers_and_populations_finish_exactly_the_requested_trials(
    in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    shrink = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "pruner.name=none"]
    sets = [f"--set={o}" for o in [*TINY, *shrink]]
    args = ["--workers", "2", "--population", "3", "--trials", "7", "--wandb", "disabled"]
    code = main(["run", str(DEFAULT_CONFIG), *args, *sets])
    out = capfd.readouterr().out
    assert code == 0, out
    trials = trials_of(f"sqlite:///{in_tmp / 'runs' / 'studies.db'}")
    assert sum(t.state in FINISHED for t in trials) == 7
    assert len(trials) == 7  # none failed, no 8th started: 3 + 3 claimed, then the last 1
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both worker processes trained


@pytest.fixture(autouse=True)
def _quiet_optuna_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="optuna")


def test_members_are_validated_on_the_batches_lightning_would_keep() -> None:
    """`limit_val_batches` as Lightning reads it (a count, or a share of at least one batch),
    then the kept samples regrouped into as few batches as fit: the same samples in order."""
    from regzoo.studies.population.train import VAL_VALUES, _limited, _regrouped

    batches = [(torch.full((4, 3), float(i)), torch.full((4,), i)) for i in range(10)]
    assert [int(y[0]) for _, y in _limited(batches, 2)] == [0, 1]
    assert [int(y[0]) for _, y in _limited(batches, 0.25)] == [0, 1]  # int(2.5)
    assert len(_limited(batches, 0.01)) == 1 and len(_limited(batches, None)) == 10
    kept = _limited(batches, 5)
    merged = _regrouped(kept, members=3)
    assert len(merged) == 1  # 20 samples x 3 values x 3 members fit
    assert torch.equal(merged[0][1], torch.cat([y for _, y in kept]))
    assert torch.equal(merged[0][0], torch.cat([x for x, _ in kept]))
    many = _regrouped(batches, members=VAL_VALUES // 12)  # 4 samples of 3 values a batch
    assert [len(y) for _, y in many] == [4] * 10  # never smaller than the loader's batches


class Rows(nn.Module):
    """An image's rows as steps through a GRU, kept under a name that says nothing of it."""

    def __init__(self, features: int, width: int) -> None:
        super().__init__()
        self.memory = nn.GRU(features, width, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.memory(x.flatten(1, 2))  # (B, 1, H, W) -> (B, H, W) -> (B, H, width)
        return out[:, -1]  # (B, width)


class TinyRecurrent(Classifier):
    """A model named like none of the zoo's, recurrent inside."""

    def build_network(self) -> nn.Module:
        return nn.Sequential(Rows(self.input_shape[-1], 8), nn.Linear(8, self.hp.num_classes))


class TinyDense(Classifier):
    """Linear layers only, under a name the zoo does not know either."""

    def build_network(self) -> nn.Module:
        features = math.prod(self.input_shape)
        return nn.Sequential(
            nn.Flatten(), nn.Linear(features, 8), nn.Linear(8, self.hp.num_classes)
        )


@pytest.fixture
def tiny_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tiny-recurrent` and `tiny-dense` registered for the test only."""
    monkeypatch.setattr(MODELS, "_classes", dict(MODELS._classes))
    register_model("tiny-recurrent")(TinyRecurrent)
    register_model("tiny-dense")(TinyDense)


@pytest.mark.usefixtures("tiny_models")
@pytest.mark.parametrize(
    ("model", "layer"),
    [
        ("{name: tiny-recurrent}", "'net.0.memory' (GRU)"),
        ("{name: tiny-dense}", None),
        ("{name: rnn, cell: lstm, hidden_size: 8}", "'net.1.rnn' (LSTM)"),
        ("{name: fnn, hidden: [8]}", None),
    ],
)
def test_whether_a_config_batches_is_decided_by_its_models_layers(
    tmp_path: Path, model: str, layer: str | None
) -> None:
    search = "search={model.lr: {float: [1.0e-3, 1.0e-2], log: true}}"
    cfg = load_config(DEFAULT_CONFIG, overrides=overrides(tmp_path, f"model={model}", search))
    sized, note = with_population(cfg, 4)
    if layer is None:
        assert note is None and sized.population.size == 4
        return
    name = cfg.model.name
    assert note == (
        f"model {name!r} cannot be batched: its layer {layer} has no batching rule in "
        "torch.func.vmap; trials train one per Trainer"
    )
    assert sized.population.size == 1
