"""Helpers of tests/test_install.py: a wheel built from a copy of the checkout, installed into a
folder, and a "user project" whose own `zoo`, `datamodules` and `studies` packages record every
import of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO

# The repository's folders installed as `regzoo.<name>`: a project may have its own.
SHADOWS = ("zoo", "datamodules", "studies")

# Imported by `site` at start-up (its folder is on PYTHONPATH): at exit, each process writes
# which of the modules named `regzoo*`, `zoo*`, `datamodules*`, `studies*` it imported, and
# from where. It only observes; nothing in the process changes.
SITECUSTOMIZE = """\
import atexit, json, os, sys

def _record():
    tops = ("regzoo", "zoo", "datamodules", "studies")
    modules = {
        name: getattr(module, "__file__", None)
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in tops
    }
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "records")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as f:
        json.dump({"argv": sys.argv, "modules": modules}, f)

atexit.register(_record)
"""


def source_files() -> list[Path]:
    """The checkout's files as a fresh clone plus local changes would hold them: tracked, and
    untracked but not ignored (no `build/`, `*.egg-info`, caches or virtual environment)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [Path(p) for p in listed.split("\0") if p and (REPO / p).is_file()]


def build_wheel(out: Path) -> Path:
    """Build the wheel from a copy of the checkout (the repository gets no `build/`)."""
    src = out / "src"
    for rel in source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    dist = out / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), src],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = dist.glob("*.whl")
    return wheel


def install_wheel(wheel: Path, site: Path) -> None:
    """`pip install` the wheel alone (its dependencies are the venv's) into the folder `site`."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"),
            *("--disable-pip-version-check", "--target", str(site), str(wheel)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def make_project(project: Path) -> None:
    """A user's project folder with its own `zoo`, `datamodules`, `studies` packages: each one
    leaves a file `imported-<name>` behind when it is imported (or run with `-m`)."""
    for name in SHADOWS:
        package = project / name
        package.mkdir(parents=True)
        mark = (
            "from pathlib import Path\n\n"
            f"Path(__file__).resolve().parents[1].joinpath('imported-{name}').touch()\n"
        )
        (package / "__init__.py").write_text(f'{mark}MARK = "project {name}"\n')
        (package / "__main__.py").write_text(mark)


def imported_markers(project: Path) -> list[str]:
    return sorted(p.name for p in project.glob("imported-*"))


def user_env(site: Path, hooks: Path) -> dict[str, str]:
    """A user's environment: the wheel's folder on PYTHONPATH (and the observing hook), nothing
    of the checkout; W&B offline, one torch thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGZOO_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(hooks)]),
        OMP_NUM_THREADS="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    return env


def write_hooks(hooks: Path) -> None:
    hooks.mkdir(parents=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)


def read_records(hooks: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((hooks / "records").glob("*.json"))]


def clear_records(hooks: Path) -> None:
    shutil.rmtree(hooks / "records", ignore_errors=True)
