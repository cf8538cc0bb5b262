"""Damaged checkpoints: `load_model` raises one clear ValueError naming the file, and `export`
exits 2 with one line; a checkpoint carrying a pickled object that would run code is refused.

Every damaged file starts from a real checkpoint of a tiny trained zoo model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch

from regzoo.datamodules import create_datamodule
from regzoo.studies import load_config
from regzoo.studies.cli.main import main
from regzoo.studies.trial.train import train_run
from regzoo.zoo import load_model
from tests.conftest import DEFAULT_CONFIG, spec_of
from tests.reliability.conftest import TINY, Tally, cli_env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real best.ckpt of a tiny cnn trained on digits."""
    root = tmp_path_factory.mktemp("ckpt")
    cfg = load_config(DEFAULT_CONFIG, overrides=[*TINY, f"runs_dir={root}"])
    checkpoint = train_run(spec_of(cfg, root / "train")).checkpoint
    assert checkpoint is not None
    return checkpoint


def _flip_bytes(data: bytes) -> bytes:
    flipped = bytearray(data)
    for i in range(200, len(flipped), 997):  # a bit-rotted disk: bytes all through the file
        flipped[i] ^= 0xFF
    return bytes(flipped)


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes, Path], None]:
    """A damage that rewrites one part of the checkpoint and saves it with torch.save."""

    def damage(original: bytes, out: Path) -> None:
        ckpt = torch.load(_write(out, original), weights_only=True)
        change(ckpt)
        torch.save(ckpt, out)

    return damage


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _first_weight(ckpt: dict[str, Any]) -> str:
    return next(iter(ckpt["state_dict"]))


# name: (how the file is damaged, words the one-line error must contain)
DAMAGES: dict[str, tuple[Callable[[bytes, Path], None], str]] = {
    "truncated to half": (lambda b, p: _write(p, b[: len(b) // 2]) and None, "cannot be read"),
    "truncated to 10 bytes": (lambda b, p: _write(p, b[:10]) and None, "cannot be read"),
    "empty file": (lambda b, p: _write(p, b"") and None, "cannot be read"),
    "bytes flipped": (lambda b, p: _write(p, _flip_bytes(b)) and None, "cannot be read"),
    "a tensor, not a checkpoint": (
        lambda b, p: torch.save(torch.zeros(3), p),
        "not a regzoo model checkpoint",
    ),
    "a weight of the wrong shape": (
        _edit(lambda c: c["state_dict"].__setitem__(_first_weight(c), torch.zeros(3))),
        "size mismatch",
    ),
    "a weight missing": (
        _edit(lambda c: c["state_dict"].pop(_first_weight(c))),
        "Missing key",
    ),
    "state_dict not a mapping": (
        _edit(lambda c: c.__setitem__("state_dict", [1, 2])),
        "not a regzoo model checkpoint",
    ),
    "hyper_parameters not a mapping": (
        _edit(lambda c: c.__setitem__("hyper_parameters", 5)),
        "not a regzoo model checkpoint",
    ),
    "an invalid hparam": (
        _edit(lambda c: c["hyper_parameters"].__setitem__("lr", -1.0)),
        "lr=-1.0 is invalid",
    ),
    "an unknown model": (
        _edit(lambda c: c.__setitem__("regzoo_model", "transformer")),
        "unknown model 'transformer'",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_checkpoint_is_one_clear_error_from_python_and_from_export(
    damage: str,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tally: Tally,
) -> None:
    make, words = DAMAGES[damage]
    bad = tmp_path / "trial-0" / "best.ckpt"
    bad.parent.mkdir()
    make(checkpoint.read_bytes(), bad)
    with pytest.raises(ValueError) as error:
        load_model(bad)
    tally.inject("damaged checkpoint (load_model, export)")
    message = str(error.value)
    assert str(bad) in message and words in message, message

    url = study_with_best_checkpoint(tmp_path, bad)
    assert main(["export", "damaged", "--format", "onnx", "--storage", url]) == 2
    tally.inject("damaged checkpoint (load_model, export)")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and words in err, err
    assert not (tmp_path / "export").exists()  # nothing half-written


def study_with_best_checkpoint(root: Path, checkpoint: Path) -> str:
    """A study whose one complete trial recorded `checkpoint` (as `export` finds it)."""
    url = f"sqlite:///{root / 'studies.db'}"
    study = optuna.create_study(study_name="damaged", storage=url, direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"model.lr": 0.01},
            distributions={"model.lr": optuna.distributions.FloatDistribution(1e-4, 1.0)},
            value=0.9,
            user_attrs={"checkpoint": str(checkpoint)},
        )
    )
    return url


def test_export_of_a_truncated_checkpoint_from_the_shell_exits_2_without_traceback(
    checkpoint: Path, tmp_path: Path, tally: Tally
) -> None:
    bad = tmp_path / "trial-0" / "best.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(checkpoint.read_bytes()[:-100])
    url = study_with_best_checkpoint(tmp_path, bad)
    done = subprocess.run(
        [sys.executable, "-m", "regzoo", "export", "damaged", "--format", "pt2",
         "--storage", url],
        env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    tally.inject("damaged checkpoint (load_model, export)")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and str(bad) in done.stderr


class RunsCode:
    """Unpickling this object runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_everywhere_it_is_loaded(
    checkpoint: Path, tmp_path: Path, tally: Tally
) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    ckpt = torch.load(checkpoint, weights_only=True)
    torch.save({**ckpt, "payload": RunsCode(marker)}, evil)

    with pytest.raises(ValueError, match="cannot be read"):
        load_model(evil)  # zoo: what `export` and users call
    model = load_model(checkpoint)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu")
    dm = create_datamodule("digits", batch_size=64, normalize=model.hparams.normalize)
    with pytest.raises(Exception, match="Weights only load failed"):
        # the runner's own path: each trial tests its best checkpoint this way
        trainer.test(model, datamodule=dm, ckpt_path=str(evil), weights_only=True, verbose=False)
    tally.inject("checkpoint with a code-running pickle", 2)
    assert not marker.exists()
