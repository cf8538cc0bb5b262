"""benchmarks/: the table writer, alternating repeats, the study runner's sampling and stopping,
the hand-written peer's mirror of the default study, and the CLI and GPU script end to end at
tiny settings (no timing is asserted)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from benchmarks import peer, versus_peer
from benchmarks._common import (
    END,
    HEADER,
    START,
    Figure,
    alternate,
    finished,
    machine,
    run_study_process,
    write_table,
)
from benchmarks.memory import rss_per_trial
from benchmarks.population import COMPILED, HAND, POPULATION, Settings, result_figures, run
from benchmarks.suite import SUITE
from benchmarks.workers import measure, py_spy, read_profile
from tests.conftest import DEFAULT_CONFIG, REPO

TINY_ENV = {**os.environ, "REGZOO_BENCH_TINY": "1", "PYTHONPATH": str(REPO)}


def table_rows(text: str) -> list[list[str]]:
    """The table's rows (header and rule included), split into cells."""
    table = text.split(START, 1)[1].split(END, 1)[0].strip().splitlines()
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in table]


def figure(benchmark: str, name: str, ours: str = "1 s") -> Figure:
    return Figure(benchmark, name, ours, "2 s", 0.5, "≤ 1×", True, "make bench", "m")


def test_alternate_runs_each_side_in_abba_order() -> None:
    calls: list[str] = []

    def side(name: str, value: int) -> Callable[[], int]:
        def run() -> int:
            calls.append(name)
            return value

        return run

    samples = alternate({"a": side("a", 1), "b": side("b", 2)}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert samples == {"a": [1, 1, 1], "b": [2, 2, 2]}


def test_machine_names_cpu_cores_torch_and_device() -> None:
    import torch

    text = machine()
    assert f"torch {torch.__version__}" in text and "cores" in text
    assert text.split(",")[0].strip()  # a CPU model


def test_write_table_keeps_hand_text_and_rows_not_rerun(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    write_table(out, [figure("overhead", "a"), figure("pruning", "b | c")], order=list(SUITE))
    out.write_text(out.read_text() + "\n## Findings\nwritten by hand\n")
    write_table(out, [figure("overhead", "a2", ours="3 s")], order=list(SUITE))
    text = out.read_text()
    rows = table_rows(text)
    assert rows[0] == HEADER and set(rows[1]) == {"---"}
    assert [r[:3] for r in rows[2:]] == [["overhead", "a2", "3 s"], ["pruning", "b \\| c", "1 s"]]
    assert all(len(r) == len(HEADER) for r in rows)
    assert text.endswith("## Findings\nwritten by hand\n") and text.count(START) == 1


def test_study_process_samples_memory_and_stops_on_request() -> None:
    args = ["--wandb", "disabled", "--set", "trainer.max_epochs=1"]
    run = run_study_process(
        DEFAULT_CONFIG,
        trials=200,
        args=args,
        stop=lambda trials: any(t.state.name == "COMPLETE" for t in trials),
    )
    done = finished(run)
    assert 1 <= len(done) < 200  # interrupted long before its 200 trials
    assert all(t.user_attrs["epochs"] == 1 for t in done)
    assert run.rss and run.peak_rss >= max(rss for _, rss in run.rss) > 0
    assert 1 <= len(rss_per_trial(run)) <= len(done)


def test_workers_profile_reads_the_main_threads_of_processes_that_trained(tmp_path: Path) -> None:
    trainer = 'process 10:"";process 11:"regzoo run";thread (11): MainThread'
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "\n".join(
            [
                'process 10:"";thread (10): MainThread 5',  # an empty stack
                'process 10:"";thread (10): MainThread;wait_all (studies/workers.py:1) 300',
                f"{trainer};<module> (studies/__main__.py:1);_find_and_load (<frozen "
                "importlib._bootstrap>:1);<module> (lightning/pytorch/trainer/trainer.py:1) 40",
                f"{trainer};Trainer.fit (lightning/pytorch/trainer/trainer.py:1);forward "
                "(torch/nn/modules/conv.py:1) 60",
                'process 10:"";process 11:"x";thread (12);run (studies/storage.py:1) 500',
            ]
        )
        + "\n"
    )
    # the parent (10) only waited and its import of Lightning is no fit; thread 12 is no main
    assert read_profile(raw) == {"imports": 0.4, "forward, backward, optimizer step": 0.6}


@pytest.mark.skipif(py_spy() is None, reason="py-spy (the dev extra) is not installed")
def test_workers_profile_puts_a_real_studys_main_thread_time_into_activities(
    tmp_path: Path,
) -> None:
    out = tmp_path / "spy.txt"
    figures = measure(trials=2, overrides=["trainer.max_epochs=2"], profile_to=out)
    spent = read_profile(out)
    assert figures["trials"] == 2
    assert spent["forward, backward, optimizer step"] > 0
    assert spent["imports"] > 0
    # one process's main thread, sampled waiting or not: about the command's wall time
    assert 0.3 * figures["wall s"] < sum(spent.values()) <= figures["wall s"] + 1


def test_the_overfitting_benchmark_writes_its_share_of_a_run(tmp_path: Path) -> None:
    """`make bench`'s overfitting rows, at tiny settings: the training split's evaluation
    against its run's whole time, a share that must be positive and below 1."""
    out = tmp_path / "BENCHMARKS.md"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "overfitting"]
    subprocess.run([*cmd, "--out", str(out)], cwd=tmp_path, env=TINY_ENV, check=True)
    (row,) = table_rows(out.read_text())[2:]
    assert row[0] == "overfitting" and "`default`" in row[1]
    assert 0 < float(row[4].rstrip("×")) < 1 and row[5] == "≤ 0.10×"


def test_cli_writes_the_table_at_tiny_settings(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    write_table(out, [figure("pruning", "kept")], order=list(SUITE))
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "throughput", "--out", str(out)]
    subprocess.run(cmd, cwd=tmp_path, env=TINY_ENV, check=True, capture_output=True)
    rows = table_rows(out.read_text())[2:]
    assert [r[0] for r in rows] == ["pruning", "throughput", "throughput"]
    for row in rows[1:]:
        assert row[4].endswith("×") and float(row[4].rstrip("×")) > 0
        assert row[7].startswith("`.venv/bin/python -m benchmarks.throughput")
        assert "cores" in row[8] and row[8].endswith("(--quick)")


def test_cli_refuses_an_unknown_benchmark_in_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks", "--only", "speed", "--out", str(tmp_path / "B.md")]
    proc = subprocess.run(cmd, env=TINY_ENV, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "speed" in proc.stderr
    assert not (tmp_path / "B.md").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_gpu_script_runs_its_figures_on_cpu_at_tiny_settings(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    env = {**TINY_ENV, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "cuda available" in proc.stdout
    rows = table_rows(out.read_text())[2:]
    assert {r[0] for r in rows} == {"overhead", "throughput", "population"}
    assert any(r[1].startswith("training samples/s at batch 64 on ") for r in rows)
    assert any(r[5] == "≤ 1.10×" and r[6] in ("yes", "**no**") for r in rows)


def test_population_measures_the_sizes_asked_for_and_restores_threads() -> None:
    import torch

    threads = torch.get_num_threads()
    s = Settings(
        "cpu", sizes=(2, 5), cnn_sizes=(2,), repeats=2, compiled=False, threads=1, scale=0.01
    )
    results = run(s, lightning=False)
    assert torch.get_num_threads() == threads
    assert [(r.workload, r.k) for r in results] == [
        ("toy MLP", 2),
        ("toy MLP", 5),
        ("digits CNN", 2),
    ]
    for r in results:
        assert set(r.rates) == {HAND, POPULATION} and not r.failed
        for rates in (r.rates, r.cpu_rates):
            assert all(len(v) == 2 and all(0 < x < math.inf for x in v) for v in rates.values())
        (row,) = result_figures(r, s, "cmd")
        assert row.ratio is not None and 0 < row.ratio < math.inf
        assert f"K={r.k}:" in row.figure and "over 2 repeats" in row.figure


def test_population_reports_a_step_that_fails_to_compile_in_its_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    def broken(fn: object, **kwargs: object) -> object:
        def step(*args: object) -> None:
            raise RuntimeError("no batching rule\nfor this op")

        return step

    monkeypatch.setattr(torch, "compile", broken)
    s = Settings("cpu", sizes=(2,), cnn_sizes=(), repeats=1, compiled=True, threads=1, scale=0.01)
    (result,) = run(s, lightning=False)
    assert result.failed == {COMPILED: "compile failed: no batching rule"}
    rows = result_figures(result, s, "cmd")
    assert [r.figure.split(" vs ")[0] for r in rows] == [
        "toy MLP, K=2: member-steps/s, population",
        "toy MLP, K=2: member-steps/s, population, compiled",
    ]
    assert rows[0].ratio is not None and rows[0].ours.endswith("/s")
    assert rows[1].ours == "compile failed: no batching rule" and rows[1].ratio is None


def test_cli_writes_population_rows_at_tiny_settings(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "population", "--out", str(out)]
    subprocess.run(cmd, cwd=tmp_path, env=TINY_ENV, check=True, capture_output=True)
    rows = table_rows(out.read_text())[2:]
    assert rows and {r[0] for r in rows} == {"population"}
    sizes = {(r[1].split(",")[0], *re.findall(r"K=(\d+):", r[1])) for r in rows}
    assert sizes == {("toy MLP", "1"), ("toy MLP", "3"), ("digits CNN", "1"), ("digits CNN", "2")}
    for row in rows:
        ratio = float(row[4].rstrip("×"))
        assert math.isfinite(ratio) and ratio > 0
        assert row[7].startswith("`.venv/bin/python -m benchmarks.population --device cpu")
        assert row[8].endswith("(--quick)")


def test_verdicts_agree_only_when_each_estimate_lies_in_the_others_interval() -> None:
    from benchmarks.verdicts import Estimate, agree

    a = {"no dropout": Estimate(0.010, -0.002, 0.022), "all off": Estimate(0.05, 0.03, 0.07)}
    near = {"no dropout": Estimate(0.012, 0.004, 0.020), "all off": Estimate(0.06, 0.04, 0.08)}
    assert agree(a, near) is True
    assert agree(a, {**near, "all off": Estimate(0.075, 0.069, 0.081)}) is False  # one side's
    assert agree(a, {"no dropout": near["no dropout"]}) is False  # a variant missing
    assert agree(a, {**near, "all off": Estimate(0.05, math.nan, math.nan)}) is None


def test_cli_writes_verdict_rows_at_tiny_settings(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "verdicts", "--out", str(out)]
    subprocess.run(cmd, cwd=tmp_path, env=TINY_ENV, check=True, capture_output=True)
    wall, cpu, confirmed, runs = table_rows(out.read_text())[2:]
    assert {r[0] for r in (wall, cpu, confirmed, runs)} == {"verdicts"}
    # each side trained both runs of its own copy of the study (2 seeds of the best trial)
    assert "`regzoo confirm cnn-digits --top 1 --seeds 5`" in wall[1] and ", 2 runs," in wall[1]
    assert wall[5] == "≥ 1.3×" and wall[6] in ("yes", "**no**")
    for row in (wall, cpu):
        assert math.isfinite(float(row[4].rstrip("×"))) and float(row[4].rstrip("×")) > 0
        assert row[7] == "`.venv/bin/python -m benchmarks.verdicts --only confirm --quick`"
    # both sides' confirmed test/acc, a mean inside its 95% interval
    for cell in confirmed[2:4]:
        mean, low, high = map(float, re.findall(r"[+-]\d\.\d{4}", cell))
        assert re.fullmatch(r"trial \d+: \S+ \[\S+, \S+\]", cell)
        assert low <= mean <= high and 0 < mean <= 1  # (a t interval may pass 1)
    assert confirmed[6] in ("yes", "**no**")
    assert re.fullmatch(r"[0-2] of 2 identical", runs[2])


def test_peer_mirrors_the_default_studys_budget_and_search_space() -> None:
    from regzoo.studies import load_config
    from regzoo.studies.config.search import suggest

    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.confirm is not None and cfg.confirm.seeds == peer.SEEDS
    assert (cfg.trials, cfg.trainer.max_epochs) == (peer.TRIALS, peer.EPOCHS)
    assert cfg.early_stopping is not None and cfg.early_stopping.patience == peer.PATIENCE
    assert (cfg.seed, cfg.sampler.seed) == (peer.SPLIT_SEED, 0)

    def drawn(fill: Callable[[optuna.Trial], object], seed: int) -> optuna.Trial:
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        fill(trial)
        return trial

    seen: set[str] = set()
    for seed in range(16):  # the same draws in the same order: same ranges, scales and order
        ours = drawn(lambda trial: suggest(trial, cfg.search), seed)
        theirs = drawn(peer.suggest, seed)
        assert {k.rsplit(".", 1)[-1]: v for k, v in ours.params.items()} == theirs.params
        renamed = {k.rsplit(".", 1)[-1]: v for k, v in ours.distributions.items()}
        assert renamed == theirs.distributions
        seen.add(theirs.params["regularization"])
    assert seen == {"none", "l1", "l2", "weight_decay"}


def test_peer_script_finishes_its_study_and_confirms_a_finite_accuracy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'peer.db'}"
    run = versus_peer.run_peer(versus_peer.Settings(trials=3, epochs=2, seeds=2), storage=url)
    study = optuna.load_study(study_name="peer", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3  # 2 epochs: before warm-up
    assert all(sorted(t.intermediate_values) == [0, 1] for t in study.trials)  # pruning reports
    assert run.trials == 3 and run.n == 2 and run.wall > 0
    assert 0 < run.mean <= 1 and run.low <= run.mean <= run.high


def test_peer_figures_pair_each_run_with_the_peers_beside_it() -> None:
    def runs(*walls: float) -> list[versus_peer.Run]:
        return [versus_peer.Run(w, 16, 5, 0.99, 0.98, 1.0) for w in walls]

    samples = {versus_peer.PEER: runs(40, 50, 45), "regzoo": runs(20, 20, 30)}
    speed, accuracy = versus_peer.result_figures(samples, versus_peer.Settings(), "cmd")
    assert speed.ratio == 2.0 and speed.met  # paired: 2.0, 2.5, 1.5
    assert "(1.50-2.50×)" in speed.figure and speed.ours == "20 s (20.0-30.0)"
    assert accuracy.met and accuracy.ours.count("[0.9800, 1.0000]") == 3


def test_cli_writes_peer_rows_at_tiny_settings(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "peer", "--out", str(out)]
    subprocess.run(cmd, cwd=tmp_path, env=TINY_ENV, check=True, capture_output=True)
    rows = table_rows(out.read_text())[2:]
    assert [r[0] for r in rows] == ["peer"] * 4
    speed = [r for r in rows if r[4] != "-"]
    assert [r[1].split(" vs ")[0] for r in speed] == ["`regzoo`", "`regzoo --population 1`"]
    for row in speed:
        assert math.isfinite(float(row[4].rstrip("×"))) and row[8].endswith("(--quick)")
    for row in rows:
        if row[4] == "-":  # accuracy: a finite mean with its interval on both sides
            assert all(0 < float(cell.split(" [")[0]) <= 1 for cell in row[2:4])
