"""`export`: the best trial's model as a hub folder, a torch.export program, ONNX or the
checkpoint, each taking raw inputs; and clear refusals."""

from __future__ import annotations

import json
import sys
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
    x = torch.rand(5, *model.raw_shape)  # raw inputs, a batch size the export never saw
    return model, x


def test_onnx_gives_the_models_logits(
    mixed_study: MixedStudy, best_model: tuple[torch.nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = best_model
    out = tmp_path / "best.onnx"
    assert main(["export", "mixed", "--format", "onnx", "--out", str(out), *_at(mixed_study)]) == 0
    (logits,) = ort.InferenceSession(str(out)).run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-5, rtol=1e-4)


def test_every_format_at_its_default_path_beside_the_trials(
    mixed_study: MixedStudy, best_model: tuple[torch.nn.Module, torch.Tensor]
) -> None:
    model, x = best_model
    trial = mixed_study.study().best_trial
    folder = trials_folder(mixed_study.runs / "mixed") / "export"
    for fmt in ("pt2", "ckpt", "hub"):
        assert main(["export", "mixed", "--format", fmt, *_at(mixed_study)]) == 0
    stem = folder / f"mixed-trial-{trial.number}"
    program = torch.export.load(str(stem.with_suffix(".pt2"))).module()
    torch.testing.assert_close(program(x), model(x))
    torch.testing.assert_close(load_model(stem.with_suffix(".ckpt"))(x), model(x))
    assert sorted(p.name for p in stem.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    torch.testing.assert_close(load_model(stem)(x), model(x))
    config = json.loads((stem / "config.json").read_text())
    assert config["model"] == model.model_name and config["input"]["shape"] == list(model.raw_shape)
    card = (stem / "README.md").read_text()
    assert f"trial {trial.number}" in card and f"{trial.value:.4g}" in card
    assert all(key in card for key in trial.params)
    for key in ("gap/acc", "train_eval/acc", "test/ece"):  # the overfitting view
        assert f"| {key} | {trial.user_attrs[key]:.4g} |" in card, key
    assert "Confirmed over" not in card and "Calibration" not in card  # neither was made


def test_onnx_without_its_extra_is_one_line_naming_the_extra(
    mixed_study: MixedStudy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    out = mixed_study.runs / "no-onnx.onnx"
    assert main(["export", "mixed", "--format", "onnx", "--out", str(out), *_at(mixed_study)]) == 2
    err = capsys.readouterr().err.strip()
    assert "regzoo[onnx]" in err and "onnxscript" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_push_to_hub_offline_writes_the_folder_and_says_why_in_one_line(
    mixed_study: MixedStudy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub unreachable, as on this machine
    out = tmp_path / "hub"
    args = ["--format", "hub", "--out", str(out), "--push-to-hub", "someone/model"]
    assert main(["export", "mixed", *args, *_at(mixed_study)]) == 2
    err = capsys.readouterr().err.strip()
    assert "someone/model" in err and len(err.splitlines()) == 1
    assert load_model(out) is not None  # the folder itself is complete


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


def test_the_checkpoint_says_what_the_raw_inputs_are(mixed_study: MixedStudy) -> None:
    checkpoint = torch.load(
        mixed_study.study().best_trial.user_attrs["checkpoint"], weights_only=True
    )
    described = checkpoint["regzoo_input"]
    assert described["shape"] == [1, 8, 8] and described["dtype"] == "float32"
    assert described["range"] == [0.0, 1.0]  # digits: pixel values scaled to [0, 1]
    assert described["class_names"] == [str(i) for i in range(10)]
    assert described["normalize"] == checkpoint["hyper_parameters"]["normalize"]


def test_calibrate_stores_one_temperature_in_every_format_and_prints_the_ece(
    mixed_study: MixedStudy,
    best_model: tuple[torch.nn.Module, torch.Tensor],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every format divides the same logits by the fitted temperature (so no prediction
    changes), which lowers the validation cross-entropy as LBFGS fitted it to; the ECE on the
    test split before and after is printed, as `zoo.metrics` computes it."""
    from regzoo.datamodules import create_datamodule
    from regzoo.zoo.metrics import calibration_error, logits_of

    model, x = best_model
    outs = {fmt: tmp_path / f"calibrated{suffix}" for fmt, suffix in FORMATS.items()}
    temperatures = []
    for fmt, out in outs.items():
        args = ["export", "mixed", "--format", fmt, "--out", str(out), "--calibrate"]
        assert main([*args, *_at(mixed_study)]) == 0
        line = next(s for s in capsys.readouterr().out.splitlines() if "calibrated:" in s)
        temperatures.append(float(line.split("temperature ")[1].split()[0]))
    assert len(set(temperatures)) == 1  # fitted the same way for every format
    temperature = float(load_model(outs["hub"]).hparams["temperature"])
    assert temperature == pytest.approx(temperatures[0], abs=1e-4) and temperature != 1.0
    assert f"a temperature of {temperature:.4f}" in (outs["hub"] / "README.md").read_text()
    expected = model(x) / temperature
    (onnx_logits,) = ort.InferenceSession(str(outs["onnx"])).run(None, {"input": x.numpy()})
    got = {
        "hub": load_model(outs["hub"])(x),
        "ckpt": load_model(outs["ckpt"])(x),
        "pt2": torch.export.load(str(outs["pt2"])).module()(x),
        "onnx": torch.from_numpy(onnx_logits),
    }
    for fmt, logits in got.items():
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-4, msg=fmt)
    dm = create_datamodule("digits", batch_size=64, normalize="standard", split_seed=0)
    dm.setup("fit")
    val_z, val_y = logits_of(model, dm.val_dataloader())
    nll = torch.nn.functional.cross_entropy
    assert nll(val_z / temperature, val_y) <= nll(val_z, val_y) + 1e-6
    test_z, test_y = logits_of(model, dm.test_dataloader())
    assert f"test/ece {calibration_error(test_z, test_y):.4f} before" in line
    assert f"{calibration_error(test_z / temperature, test_y):.4f} after" in line


FORMATS = {"hub": "", "pt2": ".pt2", "onnx": ".onnx", "ckpt": ".ckpt"}


def test_trial_picks_a_complete_trial_and_refuses_the_others_in_one_line(
    mixed_study: MixedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = mixed_study.study()
    (complete,) = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    out = tmp_path / "chosen.ckpt"
    args = ["export", "mixed", "--format", "ckpt", *_at(mixed_study)]
    assert main([*args, "--trial", str(complete.number), "--out", str(out)]) == 0
    assert out.read_bytes() == Path(complete.user_attrs["checkpoint"]).read_bytes()
    capsys.readouterr()
    refused = {t.number: f"trial {t.number} is {t.state.name.lower()}, not complete"
               for t in study.trials if t != complete}  # fmt: skip
    refused[len(study.trials)] = f"study 'mixed' has no trial {len(study.trials)}"
    assert len(refused) == 3  # the failed, the pruned, and one that does not exist
    for number, words in refused.items():
        assert main([*args, "--trial", str(number)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert err.endswith(f"complete trials, best first: {complete.number}"), err
