"""`export`: the best trial's model as ONNX, TorchScript or checkpoint, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import optuna
import pytest
import torch

from regzoo.studies.cli.main import main
from regzoo.zoo import load_model
from tests.conftest import trials_folder
from tests.studies.conftest import MixedStudy


@pytest.fixture(scope="module")
def best_model(mixed_study: MixedStudy) -> tuple[torch.nn.Module, torch.Tensor]:
    model = load_model(mixed_study.study().best_trial.user_attrs["checkpoint"])
    x = torch.randn(5, *model.input_shape)  # a batch size the export never saw
    return model, x


def test_onnx_gives_the_models_logits(
    mixed_study: MixedStudy, best_model: tuple[torch.nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = best_model
    out = tmp_path / "best.onnx"
    assert main(["export", "mixed", "--format", "onnx", "--out", str(out), *_at(mixed_study)]) == 0
    (logits,) = ort.InferenceSession(str(out)).run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_and_ckpt_default_paths_beside_the_trials(
    mixed_study: MixedStudy, best_model: tuple[torch.nn.Module, torch.Tensor]
) -> None:
    model, x = best_model
    number = mixed_study.study().best_trial.number
    folder = trials_folder(mixed_study.runs / "mixed") / "export"
    assert main(["export", "mixed", "--format", "torchscript", *_at(mixed_study)]) == 0
    scripted = torch.jit.load(str(folder / f"mixed-trial-{number}.pt"))
    torch.testing.assert_close(scripted(x), model(x))
    assert main(["export", "mixed", "--format", "ckpt", *_at(mixed_study)]) == 0
    reloaded = load_model(folder / f"mixed-trial-{number}.ckpt")
    torch.testing.assert_close(reloaded(x), model(x))


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_checkpoint_exits_2_with_one_line(
    damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "trial-0" / "best.ckpt"
    if damage == "corrupt":
        checkpoint.parent.mkdir()
        checkpoint.write_bytes(b"not a checkpoint")
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="damaged", storage=url, direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"model.lr": 0.01},
            distributions={"model.lr": optuna.distributions.FloatDistribution(1e-4, 1.0)},
            value=0.9,
            user_attrs={"checkpoint": str(checkpoint)},
        )
    )
    assert main(["export", "damaged", "--format", "onnx", "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert str(checkpoint) in err and len(err.splitlines()) == 1
    assert ("missing" if damage == "missing" else "cannot be read") in err
    assert not (tmp_path / "export").exists()


def _at(study: MixedStudy) -> list[str]:
    return ["--storage", study.url]
