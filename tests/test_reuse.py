"""A trained model carries its input pipeline (issue 14): reused in every format, it takes the
dataset's raw inputs and predicts exactly as `trainer.test` did.

Every registered model with every normalization it accepts, on image (`digits`), signal
(`mnist1d`) and point (`moons`) data, is trained for a couple of batches by `train_run`; the
logits its own `trainer.test` computed are recorded there. Each case is then exported
(checkpoint, hub folder, pt2, ONNX) and loaded in fresh processes: one with regzoo for the
checkpoint and the hub folder, one without regzoo for pt2 and ONNX (onnxruntime); all the
cases a session selects share those two processes. The quick suite runs one case per model,
data kind and normalization (about 25 s); the whole matrix of 36 cases is marked slow (about
100 s, mostly in the ONNX exporter).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from regzoo.datamodules import create_datamodule, data_facts
from regzoo.studies import validate_config
from regzoo.studies.results.export import to_onnx, to_pt2
from regzoo.studies.trial.spec import RunResult
from regzoo.studies.trial.train import train_run
from regzoo.zoo import create_model, from_pretrained, list_models, load_model, save_pretrained
from tests.conftest import spec_of

HELPER = Path(__file__).with_name("_reuse_helpers.py")
DATA = {"image": "digits", "signal": "mnist1d", "points": "moons"}
NORMALIZATIONS = ("none", "minmax", "standard", "pca")
# Tiny versions of each model, with the layers that differ between training and eval (dropout,
# batch norm) switched on: a reused model left in training mode would not give the same logits.
TINY: dict[str, dict[str, Any]] = {
    "linear": {},
    "fnn": {"hidden": [8], "batchnorm": True, "dropout": 0.1},
    "cnn": {"channels": [4], "hidden": [8], "batchnorm": True, "dropout": 0.1},
    "rnn": {"hidden_size": 8, "dropout": 0.1},
}
# What a model refuses (a ValueError from create_model): cnn and rnn need a channel axis, and
# pca's whitened scores are a vector (D,).
REFUSED_KINDS = {"cnn": {"points"}, "rnn": {"points"}}
REFUSED_NORMALIZATIONS = {"cnn": {"pca"}, "rnn": {"pca"}}
FORMATS = ("ckpt", "hub", "pt2", "onnx")
LOGIT_TOL = 1e-5  # the issue's: logits within 1e-5
ACC_TOL = 1e-6  # torchmetrics computes accuracy in float32


@dataclass(frozen=True)
class Case:
    model: str
    kind: str
    normalize: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.kind}-{self.normalize}"

    @property
    def dataset(self) -> str:
        return DATA[self.kind]


CASES = [
    Case(model, kind, normalize)
    for model in list_models()
    for kind in DATA
    for normalize in NORMALIZATIONS
    if kind not in REFUSED_KINDS.get(model, set())
    and normalize not in REFUSED_NORMALIZATIONS.get(model, set())
]
# The quick suite's cases: every model, every kind of data and every normalization once. The
# other cases run with the slow tests (the whole matrix takes about 100 s on one core, most of
# it in the ONNX exporter).
QUICK = {"fnn-image-pca", "linear-points-standard", "cnn-signal-minmax", "rnn-image-none"}
CASE_PARAMS = [
    pytest.param(c, id=c.id, marks=() if c.id in QUICK else pytest.mark.slow) for c in CASES
]


class TestLogits(L.Callback):
    """Records what `trainer.test` computed: each test batch's raw inputs, labels and the
    model's logits (a forward hook on the LightningModule, so the very tensors it scored)."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.x: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self._hook: Any = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.x, self.y, self.logits = [], [], []
        self._hook = pl_module.register_forward_hook(
            lambda module, args, out: self.logits.append(out.detach().clone())
        )

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        x, y = batch
        self.x.append(x.detach().clone())
        self.y.append(y.detach().clone())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()


@dataclass
class Trained:
    case: Case
    result: RunResult
    stored_acc: float  # test/acc as the run's metrics.csv holds it
    x: np.ndarray  # raw test inputs, (N, *raw_shape), as the datamodule serves them
    y: np.ndarray  # (N,)
    logits: np.ndarray  # what trainer.test computed, (N, num_classes)
    batches: int  # test batches seen, and forward calls recorded
    forwards: int
    files: dict[str, Path]  # format -> exported file or folder


def _config(case: Case, root: Path, data_dir: Path) -> Any:
    return validate_config(
        {
            "name": f"reuse-{case.id}",
            "model": {"name": case.model, **TINY[case.model]},
            "data": {
                "name": case.dataset,
                "normalize": case.normalize,
                "batch_size": 64,
                "train_size": 128,
                "data_dir": str(data_dir),
            },
            "trainer": {
                "max_epochs": 1,
                "limit_train_batches": 2,
                "limit_val_batches": 2,
                "accelerator": "cpu",
            },
            "early_stopping": None,
            "runs_dir": str(root / "runs"),
        },
        source=case.id,
    )


def _stored_test_acc(run_dir: Path) -> float:
    with (run_dir / "metrics.csv").open(newline="") as f:
        values = [row["test/acc"] for row in csv.DictReader(f) if row.get("test/acc")]
    assert len(values) == 1, f"{run_dir}/metrics.csv: test/acc logged {len(values)} times"
    return float(values[0])


def _train(case: Case, root: Path, data_dir: Path) -> Trained:
    cfg = _config(case, root, data_dir)
    recorder = TestLogits()
    run_dir = root / "runs" / case.id
    result = train_run(spec_of(cfg, run_dir), callbacks=[recorder])
    assert result.checkpoint is not None, result.error
    model = load_model(result.checkpoint)
    out = root / "export" / case.id
    out.mkdir(parents=True)
    files = {
        "ckpt": out / "best.ckpt",
        "hub": out / "hub",
        "pt2": out / "model.pt2",
        "onnx": out / "model.onnx",
    }
    shutil.copyfile(result.checkpoint, files["ckpt"])
    save_pretrained(model, files["hub"])
    to_pt2(model, files["pt2"], model.example_input_array)
    to_onnx(model, files["onnx"], model.example_input_array)
    return Trained(
        case=case,
        result=result,
        stored_acc=_stored_test_acc(run_dir),
        x=torch.cat(recorder.x).numpy(),
        y=torch.cat(recorder.y).numpy(),
        logits=torch.cat(recorder.logits).numpy(),
        batches=len(recorder.x),
        forwards=len(recorder.logits),
        files=files,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")  # mnist1d caches its generated arrays here


def _selected_cases(session: pytest.Session) -> list[Case]:
    """The cases of the tests this session runs (after -m and -k), or the quick ones."""
    ids = set()
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if isinstance(params.get("case"), Case):
            ids.add(params["case"].id)
    return [c for c in CASES if c.id in (ids or QUICK)]


@pytest.fixture(scope="module")
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> dict[str, Trained]:
    """Each selected case trained once and exported in every format."""
    root = tmp_path_factory.mktemp("reuse")
    return {case.id: _train(case, root, data_dir) for case in _selected_cases(request.session)}


def _run_helper(mode: str, manifest: Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(HELPER), mode, str(manifest)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{mode} process failed:\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def reloaded(
    trained: dict[str, Trained], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Every case's logits from each format, each loaded in a fresh process; and what the two
    processes saw (`regzoo`, `plain`)."""
    root = tmp_path_factory.mktemp("reloaded")
    out = root / "out"
    out.mkdir()
    cases = []
    for case_id, t in trained.items():
        x_path = root / f"{case_id}.x.npy"
        np.save(x_path, t.x)
        cases.append({"id": case_id, "x": str(x_path), **{k: str(v) for k, v in t.files.items()}})
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"out": str(out), "cases": cases}), encoding="utf-8")
    for mode in ("regzoo", "plain"):
        _run_helper(mode, manifest, cwd=root)
    logits = {
        (case_id, fmt): np.load(out / f"{case_id}.{fmt}.npy")
        for case_id in trained
        for fmt in FORMATS
    }
    seen = {mode: json.loads((out / f"{mode}.json").read_text()) for mode in ("regzoo", "plain")}
    return {"logits": logits, "seen": seen}


# ---- the tests ---------------------------------------------------------------------------------


def test_every_registered_model_has_a_tiny_version_and_the_cases_cover_it() -> None:
    assert sorted(TINY) == list_models(), "give a new model its tiny hparams in TINY"
    assert {c.model for c in CASES} == set(list_models())
    assert len(CASES) == 36  # linear, fnn: 3 kinds × 4; cnn, rnn: 2 kinds × 3
    quick = [c for c in CASES if c.id in QUICK]
    assert len(quick) == len(QUICK)
    for axis in ("model", "kind", "normalize"):
        assert {getattr(c, axis) for c in quick} == {getattr(c, axis) for c in CASES}, axis


@pytest.mark.parametrize("model", sorted(set(REFUSED_KINDS) | set(REFUSED_NORMALIZATIONS)))
def test_what_cnn_and_rnn_refuse_is_a_value_error_from_create_model(
    model: str, data_dir: Path
) -> None:
    """The combinations the reuse cases leave out are refused, not skipped silently."""
    for kind in REFUSED_KINDS.get(model, set()):
        dm = create_datamodule(DATA[kind], normalize="none", data_dir=data_dir)
        with pytest.raises(ValueError, match=rf"{model} needs .* got input_shape=\(2,\)"):
            create_model(model, **data_facts(dm), **TINY[model])
    for normalize in REFUSED_NORMALIZATIONS.get(model, set()):
        for kind in set(DATA) - REFUSED_KINDS.get(model, set()):
            dm = create_datamodule(DATA[kind], normalize=normalize, data_dir=data_dir)
            with pytest.raises(
                ValueError, match=rf"normalize='{normalize}' is invalid for {model}"
            ):
                create_model(model, **data_facts(dm), **TINY[model])


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_trainer_test_scored_the_datamodules_raw_test_split(
    case: Case, trained: dict[str, Trained], data_dir: Path
) -> None:
    t = trained[case.id]
    assert t.result.checkpoint is not None and t.result.checkpoint.is_file()
    assert "test/acc" in t.result.metrics
    assert t.forwards == t.batches > 0  # one forward per test batch: the logits it scored
    dm = create_datamodule(
        case.dataset, seed=0, normalize=case.normalize, train_size=128, data_dir=data_dir
    )
    x_test, y_test = dm.splits["test"]
    np.testing.assert_array_equal(t.x, x_test.numpy())  # raw: the model normalizes
    np.testing.assert_array_equal(t.y, y_test.numpy())
    acc = float((t.logits.argmax(-1) == t.y).mean())
    assert acc == pytest.approx(t.result.metrics["test/acc"], abs=ACC_TOL)
    assert t.stored_acc == pytest.approx(t.result.metrics["test/acc"], abs=ACC_TOL)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_a_reused_model_predicts_raw_inputs_as_trainer_test_did(
    case: Case, fmt: str, trained: dict[str, Trained], reloaded: dict[str, Any]
) -> None:
    t = trained[case.id]
    logits = reloaded["logits"][case.id, fmt]
    assert logits.shape == t.logits.shape and logits.dtype == np.float32
    np.testing.assert_allclose(logits, t.logits, rtol=0, atol=LOGIT_TOL, err_msg=f"{fmt}")
    np.testing.assert_array_equal(logits.argmax(-1), t.logits.argmax(-1))
    acc = float((logits.argmax(-1) == t.y).mean())
    assert acc == pytest.approx(t.result.metrics["test/acc"], abs=ACC_TOL)
    assert acc == pytest.approx(t.stored_acc, abs=ACC_TOL)
    if fmt in ("ckpt", "hub"):
        seen = reloaded["seen"]["regzoo"][f"{case.id}.{fmt}"]
        assert seen == {
            "model": case.model,
            "normalize": case.normalize,
            "fitted": True,
            "training": False,
        }


def test_pt2_and_onnx_load_where_regzoo_cannot_be_imported(reloaded: dict[str, Any]) -> None:
    plain = reloaded["seen"]["plain"]
    assert plain["regzoo_spec"] is None, "regzoo was still importable in the plain process"
    assert plain["regzoo_modules"] == []
    repo = Path(__file__).resolve().parents[1]
    venv = Path(sys.prefix).resolve()
    for entry in plain["sys_path"]:
        path = Path(entry or ".").resolve()
        assert not path.is_relative_to(repo) or path.is_relative_to(venv), entry


def test_largest_logit_difference_of_each_format(
    trained: dict[str, Trained], reloaded: dict[str, Any]
) -> None:
    """One line per format for the log (`-rP`): the worst case over every model and data set."""
    for fmt in FORMATS:
        diffs = {
            case_id: float(np.abs(reloaded["logits"][case_id, fmt] - t.logits).max())
            for case_id, t in trained.items()
        }
        worst = max(diffs, key=diffs.__getitem__)
        print(f"{fmt}: max |logit difference| {diffs[worst]:.3g} ({worst})")
        assert diffs[worst] <= LOGIT_TOL


# ---- damaged and code-carrying hub folders -----------------------------------------------------


class _RunsCode:
    """Unpickling this creates `marker`: a stand-in for a payload that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def hub_folder(tmp_path: Path) -> Path:
    model = create_model("fnn", input_shape=(1, 8, 8), num_classes=10, normalize="standard")
    model.fit_input(torch.rand(32, 1, 8, 8))
    return save_pretrained(model, tmp_path / "hub")


def _truncate(folder: Path, marker: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _pickle(folder: Path, marker: Path) -> None:
    (folder / "model.safetensors").write_bytes(pickle.dumps({"state": _RunsCode(marker)}))


def _torch_pickle(folder: Path, marker: Path) -> None:
    torch.save({"state": _RunsCode(marker)}, folder / "model.safetensors")


def _no_weights(folder: Path, marker: Path) -> None:
    (folder / "model.safetensors").unlink()


def _foreign_weights(folder: Path, marker: Path) -> None:
    from safetensors.torch import save_file

    save_file({"net.0.weight": torch.zeros(3, 3)}, str(folder / "model.safetensors"))


def _config_edit(change: Any) -> Any:
    def damage(folder: Path, marker: Path) -> None:
        path = folder / "config.json"
        path.write_text(change(json.loads(path.read_text()), marker), encoding="utf-8")

    return damage


def _code_in_hparam(config: dict[str, Any], marker: Path) -> str:
    config["hparams"]["activation"] = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    return json.dumps(config)


def _unknown_model(config: dict[str, Any], marker: Path) -> str:
    config["model"] = "os.system"
    return json.dumps(config)


def _unknown_hparam(config: dict[str, Any], marker: Path) -> str:
    config["hparams"]["__class__"] = "builtins.eval"
    return json.dumps(config)


DAMAGES = {
    "weights-truncated": (_truncate, "model.safetensors"),
    "weights-a-pickle-that-runs-code": (_pickle, "model.safetensors"),
    "weights-a-torch-save-that-runs-code": (_torch_pickle, "model.safetensors"),
    "weights-missing": (_no_weights, "model.safetensors"),
    "weights-of-another-model": (_foreign_weights, "model.safetensors"),
    "config-not-json": (_config_edit(lambda c, m: "{model: fnn,"), "config.json"),
    "config-binary": (
        lambda folder, marker: (folder / "config.json").write_bytes(b"\xff\xfe\x00\x81"),
        "config.json",
    ),
    "config-wrong-format": (_config_edit(lambda c, m: '{"model": "cnn"}'), "config.json"),
    "config-a-list": (_config_edit(lambda c, m: "[1, 2]"), "config.json"),
    "config-newer-format": (
        _config_edit(lambda c, m: json.dumps({**c, "format": "regzoo-model/99"})),
        "config.json",
    ),
    "config-unknown-model": (_config_edit(_unknown_model), "config.json"),
    "config-code-in-an-hparam": (_config_edit(_code_in_hparam), "config.json"),
    "config-unknown-hparam": (_config_edit(_unknown_hparam), "config.json"),
    "config-missing": (
        lambda folder, marker: (folder / "config.json").unlink(),
        "config.json",
    ),
}


def test_the_pickle_payload_would_run_code(tmp_path: Path) -> None:
    """The code-carrying files below are live: unpickled, they do create their marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


@pytest.mark.parametrize("loader", [load_model, from_pretrained], ids=["load_model", "hub"])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_or_code_carrying_hub_file_is_one_clear_error_naming_it(
    damage: str, loader: Any, hub_folder: Path, tmp_path: Path
) -> None:
    change, named = DAMAGES[damage]
    marker = tmp_path / "code-ran"
    change(hub_folder, marker)
    missing = not (hub_folder / named).exists()
    with pytest.raises((FileNotFoundError, ValueError) if missing else ValueError) as info:
        loader(hub_folder)
    message = str(info.value)
    assert named in message, message
    assert "\n" not in message, message
    assert not marker.exists(), "loading ran code from the file"
