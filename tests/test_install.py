"""Installed like a user: the wheel holds one import name, `regzoo`, and a study with two workers
runs from a project folder that has its own `zoo/`, `datamodules/` and `studies/` packages,
without importing them; the best trial's model then loads and predicts.

The wheel is built from a copy of the checkout and installed with `pip --target` into a
temporary folder put first on PYTHONPATH: path entries are searched before the venv's editable
finder (a meta-path finder appended last), so the wheel's `regzoo` is the one imported. A
`sitecustomize` beside it records, in every process, which `regzoo`, `zoo`, `datamodules` and
`studies` modules were imported and from which file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import optuna
import pytest
from optuna.trial import TrialState

from tests._install_helpers import (
    SHADOWS,
    build_wheel,
    clear_records,
    imported_markers,
    install_wheel,
    make_project,
    read_records,
    user_env,
    write_hooks,
)
from tests.conftest import REPO
from tests.reliability.conftest import TINY, as_sets

pytest.importorskip("build", reason="tests/test_install.py builds the wheel with `build`")

STUDY = "cnn-digits"  # the default config's name
ENTRY_POINT = "regzoo = regzoo.studies.cli.main:main"


class Installed:
    """The wheel, its install folder, a user project and the environment of its commands."""

    def __init__(self, root: Path) -> None:
        self.wheel = build_wheel(root / "wheel")
        self.site = root / "site"
        install_wheel(self.wheel, self.site)
        self.hooks = root / "hooks"
        write_hooks(self.hooks)
        self.project = root / "project"
        make_project(self.project)
        self.env = user_env(self.site, self.hooks)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """A command in the project folder, as the user would type it."""
        return subprocess.run(
            list(args),
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-c", code, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return Installed(tmp_path_factory.mktemp("install"))


def wheel_names(wheel: Path) -> list[PurePosixPath]:
    with zipfile.ZipFile(wheel) as zf:
        return [PurePosixPath(n) for n in zf.namelist() if not n.endswith("/")]


def read_member(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(suffix)]
        return zf.read(name).decode()


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_the_wheels_one_import_name_is_regzoo(installed: Installed) -> None:
    names = wheel_names(installed.wheel)
    tops = {n.parts[0] for n in names if not n.parts[0].endswith(".dist-info")}
    assert tops == {"regzoo"}
    assert read_member(installed.wheel, ".dist-info/top_level.txt").split() == ["regzoo"]
    code = [n for n in names if n.suffix == ".py"]
    assert code and all(n.parts[0] == "regzoo" for n in code)
    assert not [n for n in names if n.suffix == ".pyc" or "__pycache__" in n.parts]
    present = {str(n) for n in names}
    assert {"regzoo/studies/configs/default.yaml", "regzoo/py.typed"} <= present
    # Every folder of code, and each folder above it, is a regular package.
    folders = {p for n in code for p in n.parents if p != PurePosixPath(".")}
    assert not sorted(str(f) for f in folders if str(f / "__init__.py") not in present)
    # Each of the checkout's subpackages is in it, under its installed name.
    for name in SHADOWS:
        for init in (REPO / name).rglob("__init__.py"):
            assert f"regzoo/{init.relative_to(REPO).as_posix()}" in present, init
    entry_points = read_member(installed.wheel, ".dist-info/entry_points.txt")
    assert "[console_scripts]" in entry_points
    assert ENTRY_POINT in [line.strip() for line in entry_points.splitlines()]


def test_the_installed_command_line_answers_help(installed: Installed) -> None:
    for command in ([sys.executable, "-m", "regzoo"], [str(installed.site / "bin" / "regzoo")]):
        done = installed.run(*command, "--help", timeout=120)
        assert done.returncode == 0, output(done)
        assert "run" in done.stdout, output(done)
    assert imported_markers(installed.project) == []


def test_a_two_worker_study_from_a_project_with_its_own_packages(installed: Installed) -> None:
    project, site = installed.project, installed.site
    url = f"sqlite:///{project / 'studies.db'}"
    clear_records(installed.hooks)
    config = site / "regzoo" / "studies" / "configs" / "default.yaml"
    overrides = [*TINY, f"runs_dir={project / 'runs'}"]
    done = installed.run(
        sys.executable, "-m", "regzoo", "run", str(config), "--workers", "2", "--trials", "2",
        "--storage", url, "--wandb", "disabled", "--no-progress", *as_sets(overrides),
    )  # fmt: skip
    assert done.returncode == 0, output(done)
    trials = optuna.load_study(study_name=STUDY, storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, output(done)
    # Each trial trained in its own spawned worker, which imported regzoo from site-packages.
    assert len({t.user_attrs["worker"] for t in trials}) == 2, output(done)

    # The best trial's model, loaded from its checkpoint, predicts the whole test split as its
    # trial's own test did.
    predict = f"""
import json, sys, optuna, torch
from regzoo import create_datamodule, load_model
from regzoo.studies.loop.read import best_trial

trial = best_trial(optuna.load_study(study_name={STUDY!r}, storage={url!r}))
model = load_model(trial.user_attrs["checkpoint"]).eval()
dm = create_datamodule("digits", batch_size=64, normalize="standard", seed=trial.number)
dm.prepare_data()
dm.setup("test")
rows, sums, correct, count = [], [], 0, 0
with torch.no_grad():
    for x, y in dm.test_dataloader():
        logits = model(x)
        rows.append(list(logits.shape))
        sums += logits.softmax(-1).sum(-1).tolist()
        correct += int((logits.argmax(-1) == y).sum())
        count += len(y)
print(json.dumps({{"checkpoint": trial.user_attrs["checkpoint"], "rows": rows, "sums": sums,
                  "acc": correct / count, "test_acc": trial.user_attrs["test/acc"]}}))
"""
    done = installed.python(predict)
    assert done.returncode == 0, output(done)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    checkpoint = Path(got["checkpoint"])
    assert checkpoint.name == "best.ckpt" and checkpoint.is_relative_to(project / "runs" / STUDY)
    assert got["rows"] and all(r[1:] == [10] for r in got["rows"])
    assert sum(r[0] for r in got["rows"]) == 360  # digits' fixed 20% test split
    assert got["sums"] == pytest.approx([1.0] * 360, abs=1e-5)
    assert got["acc"] == pytest.approx(got["test_acc"], abs=1e-6)

    # Neither the study's three processes nor the prediction imported the project's packages,
    # and every regzoo module they imported came from the wheel.
    assert imported_markers(project) == []
    # (multiprocessing's resource tracker, a helper process of the spawned workers, imports
    # nothing of regzoo: it is left out.)
    records = [
        r
        for r in read_records(installed.hooks)
        if any(m.startswith("regzoo") for m in r["modules"])
    ]
    runs = [r for r in records if "run" in r["argv"]]  # spawned workers carry the parent's argv
    assert len(runs) == 3, [r["argv"] for r in records]  # the parent and its two workers
    assert len(records) == 4, [r["argv"] for r in records]  # ... and the prediction
    for record in records:
        modules = record["modules"]
        assert "regzoo.studies.cli.main" in modules or "regzoo.zoo" in modules, record["argv"]
        foreign = {n: f for n, f in modules.items() if n.split(".")[0] != "regzoo"}
        assert foreign == {}, record["argv"]
        outside = {n: f for n, f in modules.items() if not (f or "").startswith(f"{site}/")}
        assert outside == {}, record["argv"]


def test_the_projects_own_packages_stay_importable_beside_regzoo(installed: Installed) -> None:
    check = f"""
import json, regzoo, regzoo.zoo, regzoo.datamodules, regzoo.studies
import {", ".join(SHADOWS)}
print(json.dumps({{
    "regzoo": [m.__file__ for m in (regzoo, regzoo.zoo, regzoo.datamodules, regzoo.studies)],
    "own": {{m.__name__: [m.MARK, m.__file__] for m in ({", ".join(SHADOWS)})}},
}}))
"""
    site, project = installed.site, installed.project
    try:
        done = installed.python(check, timeout=120)
        markers = imported_markers(project)
    finally:  # the other tests assert that nothing imported them
        for marker in project.glob("imported-*"):
            marker.unlink()
    assert done.returncode == 0, output(done)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(site / "regzoo") for f in got["regzoo"]), got
    assert got["own"] == {
        name: [f"project {name}", str(project / name / "__init__.py")] for name in SHADOWS
    }
    assert markers == [f"imported-{name}" for name in sorted(SHADOWS)]
