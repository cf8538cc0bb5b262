"""`report`, `list` and `dashboard` on a real finished study."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from regzoo.studies.cli.main import main
from tests.conftest import REPO, trials_folder
from tests.studies.conftest import MixedStudy

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = (
    "optimization_history.png",
    "param_importances.png",
    "parallel_coordinate.png",
    "intermediate_values.png",
    "learning_curves.png",
    "gap.png",
)


def test_report_writes_plots_summary_and_page(
    mixed_study: MixedStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", mixed_study.name, "--storage", mixed_study.url]) == 0
    out = trials_folder(mixed_study.runs / "mixed") / "report"  # beside the trial folders
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG, name
    best = mixed_study.study().best_trial
    summary = (out / "summary.md").read_text()
    assert f"## Best trial: {best.number}" in summary
    assert f"| test/acc | {best.user_attrs['test/acc']:.4g} |" in summary
    assert "| pruned | 1 |" in summary and "| failed | 1 |" in summary
    for key in ("gap/acc", "train_eval/acc", "val/ece", "test/ece"):  # the overfitting view
        assert f"| {key} | {best.user_attrs[key]:.4g} |" in summary, key
    assert "| trial | val/loss | test/acc | gap/acc | val/ece | test/ece | epochs |" in summary
    page = (out / "index.html").read_text()
    assert all(f"<img src='{name}'" in page for name in PLOTS)
    assert "index.html" in capsys.readouterr().out


def test_report_of_an_unknown_study_exits_2_naming_the_known_ones(
    mixed_study: MixedStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "nope", "--storage", mixed_study.url]) == 2
    err = capsys.readouterr().err.strip()
    assert "'nope'" in err and "mixed" in err and len(err.splitlines()) == 1


def test_list_shows_each_study_with_its_counts(
    mixed_study: MixedStudy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["list", "--storage", mixed_study.url]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if "│ mixed " in line]
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    best = mixed_study.study().best_trial
    # study, objective, trials, complete, pruned, failed, running, best
    assert cells[:7] == ["mixed", "minimize val/loss", "3", "1", "1", "1", "0"]
    assert cells[7] == f"{best.value:.4f} (trial {best.number})"


def test_list_of_a_missing_storage_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "none.db"
    assert main(["list", "--storage", f"sqlite:///{db}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not db.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, deadline: float) -> Any:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_dashboard_serves_the_study_over_http(mixed_study: MixedStudy) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "regzoo", "dashboard", "--storage", mixed_study.url]
    server = subprocess.Popen(
        [*cmd, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        summaries = get_json(base, time.monotonic() + 60)["study_summaries"]
        (summary,) = [s for s in summaries if s["study_name"] == "mixed"]
        detail = get_json(f"{base}/{summary['study_id']}", time.monotonic() + 10)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    study = mixed_study.study()
    assert detail["directions"] == ["minimize"]
    states = {t["number"]: t["state"] for t in detail["trials"]}
    assert states == {t.number: t.state.name.capitalize() for t in study.trials}, err
    (best,) = detail["best_trials"]
    assert best["number"] == study.best_trial.number
