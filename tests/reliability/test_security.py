"""Nothing runs code from a file it loads, and a W&B API key is never written anywhere.

- Every `torch.load` in the packages passes `weights_only=True`, and so does every Lightning
  call given a `ckpt_path` and every `load_from_checkpoint` (a user's own LightningModule,
  exported); no pickle, joblib or `np.load(allow_pickle=True)` reads any file
  (the datamodules read the IDX and CIFAR *binary* formats; MNIST-1D is generated, never its
  pickle downloaded). A checkpoint carrying a code-running pickle is refused:
  test_checkpoints.py.
- A run with a (fake) WANDB_API_KEY in its environment, tracked by W&B offline and then
  reported: the key is in none of the files under the run folder or the storage, nor in what
  the commands printed.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from regzoo.studies.cli.main import main
from tests.conftest import REPO, trials_folder
from tests.reliability.conftest import TINY, Tally, as_sets, cli_env, load, run_command

PACKAGES = ("regzoo", "zoo", "datamodules", "studies", "benchmarks")
UNPICKLERS = {"pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits, as W&B keys are


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def unsafe_loads(path: Path, root: Path = REPO) -> list[str]:
    """Each call in `path` that could unpickle a file's bytes, as 'file:line what'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"{where} imports {m}" for m in modules if m.split(".")[0] in UNPICKLERS]
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        weights_only = keywords.get("weights_only")
        safe = isinstance(weights_only, ast.Constant) and weights_only.value is True
        if name.endswith("torch.load") and not safe:
            found.append(f"{where} torch.load without weights_only=True")
        if "ckpt_path" in keywords and not safe:
            found.append(f"{where} {name}(ckpt_path=...) without weights_only=True")
        pickles = keywords.get("allow_pickle")
        if name.endswith("load") and isinstance(pickles, ast.Constant) and pickles.value:
            found.append(f"{where} {name}(allow_pickle=True)")
        if name.endswith("get_dataset"):
            found.append(f"{where} {name}: unpickles a download")
        if name.endswith("load_from_checkpoint") and not safe:  # Lightning's torch.load
            found.append(f"{where} {name} without weights_only=True: unpickles a checkpoint")
    return found


def test_no_file_is_ever_unpickled_and_checkpoints_load_weights_only() -> None:
    files = sources()
    assert len(files) > 40  # the scan sees the packages
    assert [hit for path in files for hit in unsafe_loads(path)] == []


def test_the_scan_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch, numpy as np\ntorch.load('x')\n"
        "trainer.test(model, ckpt_path='x')\nnp.load('x', allow_pickle=True)\n"
        "torch.load('x', weights_only=False)\nNet.load_from_checkpoint('x')\n"
        "Net.load_from_checkpoint('x', weights_only=True)\n"
    )
    assert len(unsafe_loads(bad, tmp_path)) == 6  # the last line is safe


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_wandb_api_key_never_reaches_configs_logs_attrs_or_reports(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tally: Tally
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    url = f"sqlite:///{in_tmp / 'studies.db'}"
    command = run_command(url, 2, *as_sets(TINY))
    command[command.index("disabled")] = "offline"
    done = subprocess.run(
        command, cwd=in_tmp, env=cli_env(WANDB_API_KEY=FAKE_KEY), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["report", "cnn-digits", "--storage", url]) == 0
    tally.inject("W&B API key in the environment (offline run + report)")
    printed = done.stdout + done.stderr + "".join(capsys.readouterr())
    written = [p for p in in_tmp.rglob("*") if p.is_file()]
    runs = list((in_tmp / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and any(p.suffix == ".wandb" for p in written)
    assert trials_folder(in_tmp / "runs" / "cnn-digits") / "report" / "index.html" in written
    assert all(t.user_attrs for t in load(url).trials)
    assert FAKE_KEY not in printed
    leaks = [p for p in written if FAKE_KEY.encode() in p.read_bytes()]
    assert leaks == [], leaks
