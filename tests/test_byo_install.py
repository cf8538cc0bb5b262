"""A downstream project installed as a wheel (issue 25): its `pyproject.toml` declares its models
and its datamodule as regzoo entry points, and every command finds them by those names, in
spawned workers too: `regzoo models` lists them, a study tunes the residual MLP on the
project's own data with two workers as populations, confirms and ablates it, exports it, and
another process in another folder loads the hub folder (the entry point makes its import path
trusted: no `trust_code`), the `torch.export` program (torch alone) and the ONNX file
(onnxruntime alone) on raw inputs. Its GRU falls back to one trial per Trainer with its note.

The same path by import path on sys.path, faster: tests/studies/test_byo.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests._byo_project import write_project, write_study

pytest.importorskip("build", reason="the downstream wheel is built with `build`")
pytestmark = pytest.mark.slow

PACKAGE = "wavenets"


class Project:
    """The downstream wheel installed into `site`, and a user folder to run commands in."""

    def __init__(self, root: Path) -> None:
        source = write_project(root / "source", PACKAGE)
        dist = root / "dist"
        self._check(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, source]
        )
        [wheel] = dist.glob("*.whl")
        self.site = root / "site"
        self._check(
            [
                *(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"),
                *("--disable-pip-version-check", "--target", self.site, wheel),
            ]
        )
        self.folder = root / "user"
        self.folder.mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REGZOO_")},
            "PYTHONPATH": str(self.site),
            "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "disabled",
        }

    @staticmethod
    def _check(command: list[object]) -> None:
        done = subprocess.run(
            [str(c) for c in command], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd or self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def regzoo(self, *args: str) -> str:
        done = self.run("-m", "regzoo", *args)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project(tmp_path_factory.mktemp("downstream"))


def test_regzoo_models_lists_the_entry_points_without_importing_them(project: Project) -> None:
    out = project.regzoo("models")
    for name, path in (("resmlp", "models:ResidualMLP"), ("waves", "data:Waves")):
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert f"entry point {PACKAGE}.{path}" in line, out


def test_an_installed_project_is_tuned_confirmed_ablated_exported_and_reloaded(
    project: Project,
) -> None:
    study = write_study(project.folder / "study.yaml", name="waves", model="resmlp", data="waves")
    project.regzoo("run", str(study), "--workers", "2")
    storage = f"sqlite:///{project.folder / 'runs' / 'studies.db'}"
    trials = optuna.load_study(study_name="waves", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert all(len(t.user_attrs["population"]) == 2 for t in trials)  # two per Trainer
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # in two spawned workers

    assert "confirmed trial" in project.regzoo("confirm", "waves")
    assert "effect" in project.regzoo("ablate", "waves", "--seeds", "2")
    exported = project.folder / "exported"
    for fmt, out in (("hub", "hub"), ("pt2", "model.pt2"), ("onnx", "model.onnx")):
        project.regzoo("export", "waves", "--format", fmt, "--out", str(exported / out))
    config = json.loads((exported / "hub" / "config.json").read_text())
    assert config["model"] == f"{PACKAGE}.models:ResidualMLP"  # the import path, not "resmlp"

    # Another folder, raw inputs: the hub folder through regzoo (trusted: an entry point's
    # path), the program through torch alone, the ONNX file through onnxruntime alone.
    elsewhere = project.folder / "elsewhere"
    elsewhere.mkdir()
    code = f"""
import json, sys, torch
x = torch.sin(torch.linspace(0, 6.3, 16)).reshape(1, 1, 16).repeat(3, 1, 1)
program = torch.export.load({str(exported / "model.pt2")!r}).module()
out = {{"pt2": program(x).argmax(-1).tolist()}}
try:
    import onnxruntime
except ImportError:
    pass
else:
    session = onnxruntime.InferenceSession({str(exported / "model.onnx")!r})
    name = session.get_inputs()[0].name
    out["onnx"] = session.run(None, {{name: x.numpy()}})[0].argmax(-1).tolist()
assert "regzoo" not in sys.modules
from regzoo import load_model
out["hub"] = load_model({str(exported / "hub")!r})(x).argmax(-1).tolist()
print(json.dumps(out))
"""
    done = project.run("-c", code, cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(got["hub"]) == 3 and all(v == got["hub"] for v in got.values()), got


def test_an_installed_gru_falls_back_to_one_trial_per_trainer_with_its_note(
    project: Project,
) -> None:
    study = write_study(project.folder / "gru.yaml", name="gru", model="wavegru", data="waves")
    study.write_text(study.read_text().replace(", width: 16", "").replace("trials: 4", "trials: 2"))
    out = project.regzoo("run", str(study))
    assert (
        "population: model 'wavegru' cannot be batched: its layer 'net.gru' (GRU) has no "
        "batching rule in torch.func.vmap; trials train one per Trainer"
    ) in " ".join(out.split()), out
