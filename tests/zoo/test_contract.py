"""The contract every registered model keeps, for every input kind docs/design.md allows it.

Parametrized over `list_models()`: a new model gets these tests by registering (add a small
configuration to `SMALL` in `helpers.py` to keep them fast).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from regzoo.zoo import Classifier, create_model, list_models, load_model
from tests.zoo.helpers import (
    KINDS,
    NUM_CLASSES,
    REFUSES,
    SMALL,
    TRAIN_ONLY,
    learnable_data,
    loader,
    mean_loss,
    trainer,
)

pytestmark = TRAIN_ONLY  # fits without validation data

# (model, hparams, input kind): every model on every kind it accepts, plus the other rnn cells
# and an fnn without hidden biases (the lecture's XOR network) with absolute-value units.
CASES: list[tuple[str, dict[str, Any], str]] = [
    (name, SMALL.get(name, {}), kind)
    for name in list_models()
    for kind in KINDS
    if kind not in REFUSES.get(name, set())
] + [
    ("rnn", {"cell": "lstm", "hidden_size": 8}, "signal"),
    ("rnn", {"cell": "rnn", "hidden_size": 8, "bidirectional": True}, "image"),
    ("fnn", {"hidden": (8,), "bias": False, "activation": "abs"}, "vector"),
]
REFUSED = [(name, kind) for name in list_models() for kind in sorted(REFUSES.get(name, ()))]


def case_id(case: tuple[str, dict[str, Any], str]) -> str:
    name, hparams, kind = case
    extra = ",".join(f"{k}={v}" for k, v in hparams.items() if k in ("cell", "bias"))
    return f"{name}-{kind}" + (f"-{extra}" if extra else "")


def build(case: tuple[str, dict[str, Any], str], **training: Any) -> Classifier:
    name, hparams, kind = case
    return create_model(
        name, input_shape=KINDS[kind], num_classes=NUM_CLASSES, **hparams, **training
    )


# torch's ONNX exporter (torch.export based) takes seconds per model: every model is exported in
# the quick suite on its first input kind, the other cases only with the slow tests.
_FIRST = {name: next(c for c in CASES if c[0] == name) for name in list_models()}
ONNX_CASES = [
    pytest.param(c, id=case_id(c), marks=() if c is _FIRST[c[0]] else pytest.mark.slow)
    for c in CASES
]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_outputs_one_logit_per_class(case: tuple[str, dict[str, Any], str]) -> None:
    model = build(case)
    x = torch.randn(3, *KINDS[case[2]])
    assert model(x).shape == (3, NUM_CLASSES)
    assert model.eval()(x).shape == (3, NUM_CLASSES)


@pytest.mark.parametrize(("name", "kind"), REFUSED)
def test_refuses_an_input_kind_it_cannot_read(name: str, kind: str) -> None:
    with pytest.raises(
        ValueError, match=rf"{name} needs .*input_shape={re.escape(repr(KINDS[kind]))}"
    ):
        create_model(name, input_shape=KINDS[kind], num_classes=NUM_CLASSES)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradients_reach_every_parameter(case: tuple[str, dict[str, Any], str]) -> None:
    model = build(case)
    x, y = learnable_data(KINDS[case[2]], n=8)
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Each case fitted once by a real Trainer whose ModelCheckpoint writes the last epoch."""
    L.seed_everything(0, verbose=False)
    case = request.param
    model = build(case, lr=1e-2)
    x, y = learnable_data(KINDS[case[2]])
    before = mean_loss(model, x, y)
    ckpt_dir = tmp_path_factory.mktemp(case_id(case))
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="last-epoch")
    trainer(max_epochs=3, callbacks=[checkpoint], enable_checkpointing=True).fit(
        model, loader(x, y)
    )
    after = mean_loss(model, x, y)
    return {
        "case": case,
        "model": model.eval(),
        "x": x,
        "before": before,
        "after": after,
        "ckpt": Path(checkpoint.last_model_path or checkpoint.best_model_path),
    }


def test_a_tiny_fit_lowers_the_loss(trained: dict[str, Any]) -> None:
    assert trained["after"] < trained["before"]


def test_checkpoint_round_trip_gives_identical_outputs(trained: dict[str, Any]) -> None:
    # The file must open under torch's safe loader, and the class comes from the checkpoint.
    torch.load(trained["ckpt"], weights_only=True)
    rebuilt = load_model(trained["ckpt"])
    assert type(rebuilt) is type(trained["model"])
    assert not rebuilt.training
    assert dict(rebuilt.hparams) == dict(trained["model"].hparams)
    x = trained["x"]
    assert torch.equal(rebuilt(x), trained["model"](x))


# torch 2.13's exporter (torch.export) warns from its own internals: it copies torch's deprecated
# LeafSpec, traces the rnn through the deprecated torch._check_is_size, and notes that nn.RNN
# reassigns its `_flat_weights` in forward. `regzoo export` silences them (results/export.py).
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")
@pytest.mark.filterwarnings("ignore:_check_is_size will be removed:FutureWarning")
@pytest.mark.filterwarnings(r"ignore:The tensor attributes self\.net\..*_flat_weights:UserWarning")
@pytest.mark.parametrize("trained", ONNX_CASES, indirect=True)
def test_onnx_output_equals_torch_output(trained: dict[str, Any], tmp_path: Path) -> None:
    model, x = trained["model"], trained["x"][:5]  # a batch size other than the example's
    path = tmp_path / "model.onnx"
    model.to_onnx(  # the example input is model.example_input_array, a batch of 2
        path,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


# torch.export, TorchScript's replacement (regzoo export --format pt2): a program that loads
# without the model's class, with a dynamic batch dimension. The exporter's own internal warnings
# are the ONNX test's above.
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")
@pytest.mark.filterwarnings("ignore:_check_is_size will be removed:FutureWarning")
@pytest.mark.filterwarnings(r"ignore:The tensor attributes self\.net\..*_flat_weights:UserWarning")
def test_exported_program_output_equals_torch_output(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    model, x = trained["model"], trained["x"][:5]  # a batch size other than the example's
    path = tmp_path / "model.pt2"
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(model, (model.example_input_array,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
