"""A user's own model and data (issue 25), by import path (`package.module:Name` on sys.path):
the downstream project of tests/_byo_project.py, tuned with two workers as a population,
confirmed, exported and reloaded in a fresh process; its GRU falls back with a note; loading
imports a recorded path only when it is registered or trusted; bad input exits 2 in one line;
each trial on two DDP devices with its W&B run (slow).

The same project installed as a wheel, by its entry points: tests/test_byo_install.py (slow).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import optuna
import pytest
import torch
from optuna.trial import TrialState

from regzoo.datamodules import build_datamodule, data_facts
from regzoo.studies import load_config
from regzoo.studies.cli.main import main
from regzoo.studies.population.members import fallback_reason, group_key
from regzoo.studies.population.train import POPULATION_ATTR
from regzoo.studies.trial.spec import TrialSpec
from regzoo.zoo import Classifier, create_model, load_model, model_hparams, save_pretrained
from tests._byo_project import write_project, write_study

PACKAGE = "byo_nets"  # imported by path: a name no other test uses
RESMLP = f"{PACKAGE}.models:ResidualMLP"
GRU = f"{PACKAGE}.models:GRUNet"
OWN_MODULE = f"{PACKAGE}.models:WaveModule"
WAVES = f"{PACKAGE}.data:Waves"

# Test-only classes beside the project: a network whose argument is a regzoo option, one that
# cannot run under vmap, and a module that leaves a mark when it is imported.
EXTRA = '''\
from pathlib import Path

import torch
from torch import nn

from byo_nets.data import Waves


class Clash(nn.Module):
    def __init__(self, input_shape, num_classes, lr: float = 0.1):
        super().__init__()
        self.out = nn.Linear(input_shape[-1], num_classes)


class Scaled(Waves):
    """A datamodule with a `normalize` option of its own (it scales its signals itself)."""

    def __init__(self, batch_size: int = 32, normalize: str = "none"):
        super().__init__(batch_size=batch_size)
        self.normalize = normalize


class ItemNet(nn.Module):
    """Reads a weight's value in Python: vmap cannot batch that."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.out = nn.Linear(input_shape[-1], num_classes)

    def forward(self, x):
        scale = float(self.out.weight.abs().max().item()) or 1.0
        return self.out(x.flatten(1)) / scale
'''
MARKER = """\
from pathlib import Path

Path(__file__).with_name("imported").touch()
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project on sys.path (spawned workers inherit it), as `PYTHONPATH=.` would put it."""
    folder = write_project(tmp_path_factory.mktemp("byo"), PACKAGE)
    (folder / PACKAGE / "extra.py").write_text(EXTRA)
    (folder / "byo_marker.py").write_text(MARKER)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def test_a_plain_module_by_import_path_is_a_classifier_with_every_course_knob(
    project: Path,
) -> None:
    model = create_model(
        RESMLP,
        input_shape=(1, 16),
        num_classes=3,
        width=8,
        optimizer="sgd",
        l2=0.1,
        init="xavier",
        grad_clip=1.0,
    )
    assert isinstance(model, Classifier) and model.model_name == RESMLP
    assert model.net.inp.in_features == 16 and model.net.out.out_features == 3  # from the data
    assert model.hparams["width"] == 8 and model.hparams["optimizer"] == "sgd"
    assert torch.count_nonzero(model.net.inp.bias) == 0  # xavier's biases start at 0
    assert model.penalty() > 0  # l2 reaches the user's weights
    assert isinstance(model.configure_optimizers(), torch.optim.SGD)
    assert {"width", "blocks", "lr", "l2"} <= set(model_hparams(RESMLP))
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) depth; accepted: .*width"):
        create_model(RESMLP, input_shape=(1, 16), num_classes=3, depth=2)
    with pytest.raises(ValueError, match=r"argument\(s\) lr are also regzoo's training options"):
        create_model(f"{PACKAGE}.extra:Clash", input_shape=(16,), num_classes=3)


def test_a_user_datamodule_gives_its_classes_its_first_batch_shape_and_takes_the_study_seed(
    project: Path,
) -> None:
    dm = build_datamodule(WAVES, study_seed=7, run_seed=9, batch_size=16)
    assert dm.seed == 7  # `seed` alone chooses its split: the study's, for every run
    facts = data_facts(dm, name=WAVES)
    assert facts["input_shape"] == (1, 16) and facts["num_classes"] == 3
    assert facts["normalize"] == "none"
    ours = build_datamodule("digits", study_seed=7, run_seed=9)
    assert (ours.seed, ours.split_seed) == (9, 7)  # both: the run's and the study's


class Recorder(L.LightningModule):
    """Keeps the inputs of every batch it trains and validates on."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(16, 3)
        self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen["train"].append(batch[0].clone())
        return torch.nn.functional.cross_entropy(self.layer(batch[0].flatten(1)), batch[1])

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.seen["val"].append(batch[0].clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _off_clean_waves(x: torch.Tensor) -> torch.Tensor:
    """Each input's distance from the nearest noiseless wave the data draws from."""
    t = torch.linspace(0, 1, 16)
    clean = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (1, 2, 3)])  # (3, 16)
    return (x.flatten(1)[:, None, :] - clean).abs().amax(-1).amin(-1)  # (B,)


def test_regzoo_augments_a_user_datamodules_training_batches_on_their_device(
    project: Path, tiny_trainer_kwargs: dict[str, object]
) -> None:
    dm = build_datamodule(WAVES, study_seed=0, run_seed=0, noise=0.0, augment={"noise": 0.2})
    recorder = Recorder()
    L.Trainer(**tiny_trainer_kwargs).fit(recorder, datamodule=dm)
    train, val = torch.cat(recorder.seen["train"]), torch.cat(recorder.seen["val"])
    assert bool((_off_clean_waves(train) > 0.05).all())  # every training input got noise
    assert float(_off_clean_waves(val).max()) < 1e-5  # validation inputs are left as they are


def test_loading_imports_a_recorded_path_only_when_registered_or_trusted(
    project: Path, tmp_path: Path
) -> None:
    model = create_model(RESMLP, input_shape=(1, 16), num_classes=3, width=8)
    folder = save_pretrained(model, tmp_path / "hub")
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == RESMLP  # the import path, for a fresh interpreter
    with pytest.raises(ValueError, match=f"names the model '{RESMLP}'.*trust_code=True"):
        load_model(folder)
    x = torch.randn(4, 1, 16)
    assert torch.allclose(load_model(folder, trust_code=True)(x), model(x))

    for name in ("os:system", "byo_marker:Anything"):
        (folder / "config.json").write_text(json.dumps({**config, "model": name}))
        with pytest.raises(ValueError, match=f"names the model '{name}', an import path"):
            load_model(folder)
        checkpoint = tmp_path / "model.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": {}, "regzoo_model": name}, checkpoint)
        with pytest.raises(ValueError, match=f"names the model '{name}', an import path"):
            load_model(checkpoint)
    assert not (project / "imported").exists()  # refused before anything was imported


def _config(tmp_path: Path, model: str, *overrides: str) -> Path:
    path = write_study(tmp_path / "study.yaml", name="waves", model=model, data=WAVES)
    if model != RESMLP:  # `width` is the residual MLP's own argument
        text = path.read_text().replace(", width: 16", "")
        if model == OWN_MODULE:  # its constructor takes lr, none of regzoo's other options
            text = "\n".join(line for line in text.splitlines() if "model.l2" not in line)
        path.write_text(text)
    return path


def test_members_share_a_user_datamodules_own_normalize_option(
    project: Path, tmp_path: Path
) -> None:
    """`data.normalize` of a regzoo dataset may differ between members (each model normalizes
    its own inputs); a user's datamodule's own `normalize` option may not, since one datamodule
    serves a population: trials that differ in it are grouped apart."""

    def key(data: str, normalize: str) -> str:
        path = write_study(tmp_path / "s.yaml", name="waves", model=RESMLP, data=data)
        cfg = load_config(path)
        spec = TrialSpec(cfg, {"data.normalize": normalize}, tmp_path, 0, "run")
        return group_key(spec)

    scaled = f"{PACKAGE}.extra:Scaled"
    assert key(scaled, "minmax") != key(scaled, "standard")
    assert key("mnist1d", "minmax") == key("mnist1d", "standard") != key("mnist1d", "pca")


def test_a_network_batches_when_the_probe_agrees_and_falls_back_with_a_note(
    project: Path, tmp_path: Path
) -> None:
    assert fallback_reason(load_config(_config(tmp_path, RESMLP))) is None  # LayerNorm, residual
    gru = fallback_reason(load_config(_config(tmp_path, GRU)))
    assert gru == (
        f"model '{GRU}' cannot be batched: its layer 'net.gru' (GRU) has no batching rule in "
        "torch.func.vmap; trials train one per Trainer"
    )
    item = fallback_reason(load_config(_config(tmp_path, f"{PACKAGE}.extra:ItemNet")))
    assert item is not None and "batched, it raised" in item and "one per Trainer" in item
    own = fallback_reason(load_config(_config(tmp_path, OWN_MODULE)))
    assert (
        own == f"model '{OWN_MODULE}' is a LightningModule of its own; trials train one per Trainer"
    )


def in_fresh_process(code: str, project: Path) -> list[str]:
    """What `code` prints, run by another interpreter in the project's folder: its words."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=project
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_own_code_tunes_with_two_workers_as_populations_is_confirmed_exported_and_reloaded(
    project: Path, in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = _config(in_tmp, RESMLP)
    # Each member augments its batches with its own draws, on the user's data too.
    args = ["--workers", "2", "--set", "data.augment.noise=0.1"]
    assert main(["run", str(config), *args]) == 0, capfd.readouterr().out
    storage = f"sqlite:///{in_tmp / 'runs' / 'studies.db'}"
    trials = optuna.load_study(study_name="waves", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(len(t.user_attrs[POPULATION_ATTR]) == 2 for t in trials)  # two per Trainer
    checkpoint = torch.load(trials[0].user_attrs["checkpoint"], weights_only=True)
    assert checkpoint["regzoo_model"] == RESMLP

    assert main(["confirm", "waves"]) == 0, capfd.readouterr().out
    assert "confirmed trial" in capfd.readouterr().out
    report = in_tmp / "report"
    assert main(["report", "waves", "--out", str(report)]) == 0, capfd.readouterr().out
    summary = (report / "summary.md").read_text()
    assert "## Confirmed over" in summary and "gap/acc" in summary  # its verdict, its gap
    assert (report / "index.html").is_file() and (report / "learning_curves.png").is_file()
    out = in_tmp / "exported"
    capfd.readouterr()
    # Calibrated on the user's datamodule, split as every run of the study split it.
    assert main(["export", "waves", "--format", "hub", "--calibrate", "--out", str(out)]) == 0
    assert "calibrated: temperature" in capfd.readouterr().out
    # Another process in another folder, on raw inputs: the class comes back by its path.
    code = (
        "import torch; from regzoo import load_model\n"
        f"model = load_model({str(out)!r}, trust_code=True)\n"
        "x = torch.sin(torch.linspace(0, 6.3, 16)).reshape(1, 1, 16)\n"
        "print(type(model).__name__, model(x).shape[-1])\n"
    )
    assert in_fresh_process(code, project) == ["ResidualMLP", "3"]


def test_regzoo_train_trains_a_lightning_module_of_its_own_as_it_is(
    project: Path, in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = _config(in_tmp, OWN_MODULE)
    assert main(["train", str(config), "--set", "model.lr=0.05"]) == 0
    out = capfd.readouterr().out
    assert re.match(r"val/acc=0\.\d+ +epochs=2\n", out), out  # its own logged metric
    checkpoint = torch.load(in_tmp / "runs/waves/train-1/best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["lr"] == 0.05  # its constructor took model.lr


def test_a_lightning_module_of_its_own_exports_as_ckpt_pt2_and_onnx_and_refuses_hub(
    project: Path, in_tmp: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Its checkpoint as it is (its class's `load_from_checkpoint`), its own forward as pt2
    and ONNX on a batch of the data's input shape: the same logits in a fresh process; what
    needs a Classifier (a hub folder, a temperature) is refused in one line, nothing written."""
    config = _config(in_tmp, OWN_MODULE)
    assert main(["run", str(config), "--trials", "1", "--set", "confirm=null"]) == 0
    files = {fmt: in_tmp / f"own.{fmt}" for fmt in ("ckpt", "pt2", "onnx")}
    for fmt, path in files.items():
        assert main(["export", "waves", "--format", fmt, "--out", str(path)]) == 0
    capfd.readouterr()
    for args, why in (
        (["--format", "hub"], "--format hub: model 'byo_nets.models:WaveModule' is a Lightning"),
        (["--format", "pt2", "--calibrate"], "--calibrate: model 'byo_nets.models:WaveModule'"),
    ):
        out = in_tmp / "refused"
        assert main(["export", "waves", *args, "--out", str(out)]) == 2
        err = capfd.readouterr().err.strip()
        assert err.count("\n") == 0 and why in err, err
        assert not out.exists()
    code = (
        "import onnxruntime, torch\n"
        "from byo_nets.models import WaveModule\n"
        "x = torch.sin(torch.linspace(0, 6.3, 48)).reshape(3, 1, 16)\n"
        f"own = WaveModule.load_from_checkpoint({str(files['ckpt'])!r}).eval()\n"
        f"program = torch.export.load({str(files['pt2'])!r}).module()\n"
        f"session = onnxruntime.InferenceSession({str(files['onnx'])!r})\n"
        "with torch.no_grad():\n"
        "    a, b = own(x), program(x)\n"
        "c = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])\n"
        "print(*a.shape, float((a - b).abs().max()), float((a - c).abs().max()))\n"
    )
    rows, classes, pt2_diff, onnx_diff = in_fresh_process(code, project)
    assert (rows, classes) == ("3", "3") and float(pt2_diff) == 0.0 and float(onnx_diff) < 1e-5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "byo_nets.nope:Net"}, "module 'byo_nets.nope' does not import"),
        ({"model": WAVES}, "allowed: a torch.nn.Module, LightningModule or regzoo Classifier"),
        ({"data": RESMLP}, "allowed: a LightningDataModule class"),
        ({"model.depth": 3}, f"model.depth: unknown hyperparameter of '{RESMLP}'"),
        ({"data.seed": 3}, f"data.seed: unknown option of '{WAVES}'"),
        ({"data": f"{PACKAGE}.data:Unlabelled"}, "sets num_classes (an integer >= 2)"),
        # A course option a LightningModule of its own does not take is not silently dropped.
        (
            {"model": OWN_MODULE, "model.l2": 0.1},
            f"model.l2: unknown hyperparameter of '{OWN_MODULE}'",
        ),
        ({"data.augment.rotation": 10}, "augment.rotation=10 makes no sense for 1-D signals"),
    ],
)
def test_bad_own_code_exits_2_in_one_line_before_any_trial(
    project: Path,
    in_tmp: Path,
    capfd: pytest.CaptureFixture[str],
    change: dict[str, object],
    message: str,
) -> None:
    config = _config(in_tmp, str(change.get("model", RESMLP)))
    text = config.read_text().replace(f"name: {WAVES}", f"name: {change.get('data', WAVES)}")
    config.write_text(text)
    sets = [f"--set={k}={v}" for k, v in change.items() if "." in k]
    assert main(["run", str(config), *sets]) == 2
    captured = capfd.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (in_tmp / "runs").exists()  # nothing written


@pytest.mark.slow  # ~40 s or more: torchrun and two ranks each import torch and Lightning
def test_own_code_trains_each_trial_on_two_ddp_devices_with_its_wandb_run(
    project: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(project))  # torchrun's ranks import the project too
    config = _config(in_tmp, RESMLP)
    args = ["--trials", "1", "--devices-per-trial", "2", "--wandb", "offline", "--no-progress"]
    assert main(["run", str(config), *args]) == 0, capfd.readouterr().out
    storage = f"sqlite:///{in_tmp / 'runs' / 'studies.db'}"
    [trial] = optuna.load_study(study_name="waves", storage=storage).trials
    assert trial.state == TrialState.COMPLETE
    checkpoint = torch.load(trial.user_attrs["checkpoint"], weights_only=True)
    assert checkpoint["regzoo_model"] == RESMLP
    # One W&B run each for the trial and its two confirmation seeds, rank 0's only.
    assert len(list((in_tmp / "runs" / "wandb").glob("offline-run-*"))) == 3
    assert "confirmed trial 0" in capfd.readouterr().out
