"""The same config and seed, with one worker, into a new storage: the same trials, exactly.

Same parameters (the seeded sampler), the same objective values, test metrics and epochs (the
seeded training). What may differ is only what measures the run itself: wall-clock times,
process ids and W&B run ids (README, Reliability).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from regzoo.studies.cli.main import main
from tests.conftest import DEFAULT_CONFIG, reproducible
from tests.reliability.conftest import TINY, Tally, as_sets, load

TRIALS = 2


def run_into(root: Path) -> list[dict[str, Any]]:
    url = f"sqlite:///{root / 'studies.db'}"
    args = ["run", str(DEFAULT_CONFIG), "--storage", url, "--trials", str(TRIALS)]
    extra = as_sets([*TINY, f"runs_dir={root / 'runs'}", "pruner.name=median"])
    assert main([*args, "--wandb", "disabled", "--no-progress", *extra]) == 0
    return reproducible(load(url).trials)


def test_a_rerun_into_a_new_storage_repeats_every_trial_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally: Tally
) -> None:
    first = run_into(tmp_path / "first")
    second = run_into(tmp_path / "second")
    capsys.readouterr()
    tally.trials("rerun of the same config and seed", len(first) + len(second))
    assert len(first) == TRIALS and all(t["attrs"]["test/acc"] > 0 for t in first)
    assert second == first  # floats compared exactly, not approximately
