"""A study's report: Optuna's plots, the best trials' learning curves, summary.md and index.html;
with the study's verdicts (`regzoo confirm`, `regzoo ablate`) where it has them: their tables
and the ablation's forest plot.

regzoo report cnn-digits [--storage URL] [--out runs/cnn-digits/report]
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as ovm
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from regzoo.studies.loop.read import (
    is_multi_objective,
    objective_names,
    pareto_front,
    ranked_trials,
    trial_dir,
)
from regzoo.studies.trial.console import fmt, fmt_objective
from regzoo.studies.trial.metrics import read_metrics
from regzoo.studies.trial.spec import FINAL_PREFIXES
from regzoo.studies.verdicts.ablate import Ablation
from regzoo.studies.verdicts.confirm import Confirmation
from regzoo.studies.verdicts.plots import forest_plot
from regzoo.studies.verdicts.read import Verdicts, read_verdicts
from regzoo.studies.verdicts.tables import (
    METRIC,
    ablation_rows,
    bought_line,
    comparison_line,
    confirm_rows,
    fmt_cell,
    interval,
)

TOP = 3  # trials whose learning curves and parameters the report shows
# Each trial's final figures in the top trials' table: accuracy, overfitting, calibration.
TOP_COLUMNS = ("test/acc", "gap/acc", "val/ece", "test/ece")


@dataclass
class Report:
    """What `write_report` produced: the images and pages written, plots it had to skip."""

    out_dir: Path
    images: dict[str, str] = field(default_factory=dict)  # file name -> caption
    skipped: dict[str, str] = field(default_factory=dict)  # caption -> reason

    @property
    def files(self) -> list[Path]:
        return [self.out_dir / n for n in (*self.images, "summary.md", "index.html")]


def optuna_plots(study: optuna.Study, metric: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Optuna's matplotlib plots of the study, by file name: (caption, draw).

    A multi-objective study's are of its first objective (Optuna's `target`), with its Pareto
    front besides, and no intermediate values (it is never pruned, so none are reported)."""
    multi = is_multi_objective(study)
    target = (lambda t: t.values[0]) if multi else None
    plots: dict[str, tuple[str, Callable[[], Any]]] = {
        "optimization_history.png": (
            "Optimization history",
            lambda: ovm.plot_optimization_history(study, target=target, target_name=metric),
        ),
        "param_importances.png": (
            "Parameter importances (fANOVA)",
            lambda: ovm.plot_param_importances(
                study,
                evaluator=FanovaImportanceEvaluator(seed=0),
                target=target,
                target_name=metric,
            ),
        ),
        "parallel_coordinate.png": (
            "Parallel coordinates",
            lambda: ovm.plot_parallel_coordinate(study, target=target, target_name=metric),
        ),
    }
    if multi:
        names = objective_names(study)
        plots["pareto_front.png"] = (
            f"Pareto front of {' and '.join(names)} (front trials highlighted)",
            lambda: ovm.plot_pareto_front(study, target_names=names),
        )
    else:
        plots["intermediate_values.png"] = (
            f"Intermediate values of {metric} (pruned trials stop early)",
            lambda: plot_intermediate_values(study, metric),
        )
    return plots


def plot_intermediate_values(study: optuna.Study, metric: str) -> Any:
    """Optuna's intermediate-values plot, coloured by state: pruned trials dashed, stopping early.

    One legend entry per state rather than per trial, which stays readable with many trials.
    """
    ax = ovm.plot_intermediate_values(study)
    state = {f"Trial{t.number}": t.state for t in study.get_trials(deepcopy=False)}
    styles = {TrialState.COMPLETE: ("tab:blue", "-"), TrialState.PRUNED: ("tab:orange", "--")}
    shown: set[TrialState] = set()
    for line in ax.get_lines():
        trial_state = state.get(str(line.get_label()), TrialState.RUNNING)
        colour, style = styles.get(trial_state, ("tab:gray", ":"))
        line.set(color=colour, linestyle=style, marker="", alpha=0.8, label="_")
        shown.add(trial_state)
    handles = [
        Line2D([], [], color=styles.get(s, ("tab:gray", ":"))[0], ls=styles.get(s, ("", ":"))[1])
        for s in sorted(shown, key=lambda s: s.value)
    ]
    ax.legend(handles, [s.name.lower() for s in sorted(shown, key=lambda s: s.value)])
    ax.set_title(f"{metric} after each epoch (pruned trials stop early)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def write_report(study: optuna.Study, out_dir: Path, *, storage: str = "") -> Report:
    """Write every plot that the study's trials allow, then summary.md and index.html.

    `storage`: the study's storage URL, where its verdicts' runs are (none shown without it).
    """
    plt.switch_backend("agg")  # files only: a report must work with no display
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = str(study.user_attrs.get("objective", "objective"))
    report = Report(out_dir)
    for name, (caption, draw) in optuna_plots(study, metric).items():
        _save(report, name, caption, draw)
    best = ranked_trials(study)[:TOP]
    # A study of several objectives has no best trials: its front's come first, by the first.
    which = "first trials of the Pareto front" if is_multi_objective(study) else "best trials"
    _save(
        report,
        "learning_curves.png",
        f"Learning curves of the {len(best)} {which}",
        lambda: plot_learning_curves(best, f"{which} by {metric}"),
    )
    _save(
        report,
        "gap.png",
        "Generalization gap (train_eval/acc − val/acc at the kept epoch) against val/acc",
        lambda: plot_gap(study),
    )
    verdicts = read_verdicts(study, storage)
    ablation = verdicts.ablation
    if ablation is not None:
        _save(
            report,
            "ablation.png",
            f"Ablation of trial {ablation.trial}: {METRIC} of the full configuration minus each "
            f"variant's, over {len(ablation.seeds)} seeds (percentage points, 95% CI)",
            lambda: forest_plot(ablation).axes[0],
        )
    sections = summary_sections(study, metric, storage) + verdict_sections(verdicts)
    (out_dir / "summary.md").write_text(to_markdown(study.study_name, sections, report))
    (out_dir / "index.html").write_text(to_html(study.study_name, sections, report))
    return report


def _save(report: Report, name: str, caption: str, draw: Callable[[], Any]) -> None:
    """Draw one plot into a PNG, or record why it cannot be drawn (too few trials, ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            axes = draw()
    except (ValueError, RuntimeError, KeyError, ZeroDivisionError) as exc:
        report.skipped[caption] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        plt.close("all")
        return
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    figure = first.figure
    figure.savefig(report.out_dir / name, dpi=110, bbox_inches="tight")
    plt.close(figure)
    report.images[name] = caption


def plot_gap(study: optuna.Study) -> Any:
    """Every trial with a gap: its kept epoch's val/acc against its gap/acc, pruned ones
    hollow. Up and left overfits; a regularizer worth its cost moves a trial down and right."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if "gap/acc" in t.user_attrs and "train_eval/acc" in t.user_attrs
    ]
    if not trials:
        raise ValueError("no trial with train_eval metrics (a study run before they existed)")
    _, ax = plt.subplots(figsize=(6, 4))
    for state, face in ((TrialState.COMPLETE, "tab:blue"), (TrialState.PRUNED, "none")):
        chosen = [t for t in trials if t.state == state]
        if chosen:
            val = [t.user_attrs["train_eval/acc"] - t.user_attrs["gap/acc"] for t in chosen]
            gap = [t.user_attrs["gap/acc"] for t in chosen]
            ax.scatter(val, gap, facecolors=face, edgecolors="tab:blue", label=state.name.lower())
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xlabel("val/acc (kept epoch)")
    ax.set_ylabel("gap/acc = train_eval/acc − val/acc")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def read_curves(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch finite values of every training and validation metric: name -> [(epoch, value)].

    A diverged epoch's NaN or infinity is left out of the plot, not drawn as a gap to infinity.
    """
    curves: dict[str, list[tuple[int, float]]] = {}
    for epoch, values in read_metrics(metrics_csv).items():
        for key, value in values.items():
            if not key.startswith("test/") and math.isfinite(value):
                curves.setdefault(key, []).append((epoch, value))
    return curves


def plot_learning_curves(trials: list[FrozenTrial], ranking: str) -> Any:
    """Two panels: the accuracies and the losses per epoch, one colour per trial; `ranking`
    says which trials they are ("best trials by val/acc")."""
    if not trials:
        raise ValueError("no complete trial")
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = 0
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, trial in zip(colours, trials, strict=False):
        folder = trial_dir(trial)
        if folder is None or not (folder / "metrics.csv").is_file():
            continue
        curves = read_curves(folder / "metrics.csv")
        for ax, kind in ((acc_ax, "acc"), (loss_ax, "loss")):
            for split, style in (("train", ":"), ("val", "-"), ("train_eval", "*")):
                points = curves.get(f"{split}/{kind}", [])
                if points:
                    epochs, values = zip(*points, strict=True)
                    label = f"trial {trial.number} {split}"
                    ax.plot(epochs, values, style, color=colour, label=label, markersize=10)
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise ValueError("no metrics.csv found for the best trials (runs/ moved or deleted?)")
    for ax, kind in ((acc_ax, "accuracy"), (loss_ax, "cross-entropy loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{ranking}: dotted train (augmented, dropout on), solid validation, "
        "star the training split evaluated as validation at the kept epoch"
    )
    return acc_ax


# ---- the summary page ------------------------------------------------------------------------


@dataclass
class Section:
    """A table of the page, with lines of text below it."""

    title: str
    head: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def summary_sections(study: optuna.Study, metric: str, storage: str) -> list[Section]:
    """The page's tables: the study's counts, the best trial, and the top trials."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    overview = [
        ["storage", storage or "-"],
        *[
            ["direction", f"{d.name.lower()} {name}"]
            for d, name in zip(study.directions, objective_names(study), strict=True)
        ],
        ["trials", str(len(trials))],
        *[[s.name.lower(), str(count[s])] for s in (TrialState.COMPLETE, TrialState.PRUNED)],
        ["failed", str(count[TrialState.FAIL])],
    ]
    sections = [Section("Study", ["", ""], overview)]
    ranked = ranked_trials(study)
    if ranked and is_multi_objective(study):
        sections.append(front_section(study))
    elif ranked:
        best = ranked[0]
        rows = [[metric, fmt(best.value)]]
        rows += [[k, fmt(v)] for k, v in best.user_attrs.items() if k.startswith(FINAL_PREFIXES)]
        rows += [
            [k, fmt(best.user_attrs[k])]
            for k in ("epochs", "seconds", "checkpoint")
            if k in best.user_attrs
        ]
        rows += [[k, fmt(v)] for k, v in best.params.items()]
        sections.append(Section(f"Best trial: {best.number}", ["", ""], rows))
        head = ["trial", metric, *TOP_COLUMNS, "epochs", "parameters"]
        top = [
            [
                str(t.number),
                fmt(t.value),
                *[fmt(t.user_attrs.get(k, "-")) for k in TOP_COLUMNS],
                fmt(t.user_attrs.get("epochs", "-")),
                ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items()),
            ]
            for t in ranked[:10]
        ]
        sections.append(Section("Top trials", head, top))
    return sections


def front_section(study: optuna.Study) -> Section:
    """A multi-objective study's Pareto front: no trial is best, each is best at its trade."""
    names = objective_names(study)
    rows = [
        [
            str(t.number),
            *(fmt_objective(m, v) for m, v in zip(names, t.values, strict=True)),
            *[fmt(t.user_attrs.get(k, "-")) for k in TOP_COLUMNS],
            fmt(t.user_attrs.get("epochs", "-")),
            ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items()),
        ]
        for t in pareto_front(study)
    ]
    head = ["trial", *names, *TOP_COLUMNS, "epochs", "parameters"]
    notes = ["Export or confirm front trials by number: `--trial N`, `--trials N,M`."]
    return Section("Pareto front", head, rows, notes)


def verdict_sections(verdicts: Verdicts) -> list[Section]:
    """The confirmation's and the ablation's tables (none for a study without them)."""
    sections = []
    if verdicts.confirmation is not None:
        sections.append(confirm_section(verdicts.confirmation))
    if verdicts.ablation is not None:
        sections.append(ablation_section(verdicts.ablation))
    return sections


def confirm_section(c: Confirmation) -> Section:
    """The top configurations retrained with new seeds, and the first against the second."""
    rows = confirm_rows(c)
    notes = [line for line in [comparison_line(c)] if line]
    notes += [f"{label}, seed {seed}: diverged" for label, seed in c.diverged]
    best = c.candidates[0].summary(METRIC, c.seeds)
    if best.n:
        notes.append(
            f"confirmed {c.candidates[0].label}: {METRIC} {interval(best)} (mean [95% CI]) "
            f"over {best.n} seeds ({', '.join(map(str, c.seeds))} asked)"
        )
    return _rows_section(f"Confirmed over {len(c.seeds)} seeds", rows, notes)


def ablation_section(a: Ablation) -> Section:
    """The full configuration and each variant, with the effect of switching each one off."""
    notes = [
        f"effect = {METRIC} of the full configuration minus the variant's, paired by seed "
        f"({', '.join(map(str, a.seeds))}), 95% CI and p of a paired t-test: > 0 means the "
        "regularizer helped; an interval that holds 0 is within seed noise; an effect < 0 "
        "on gap/acc closed the generalization gap, on test/ece improved the calibration"
    ]
    notes += [bought_line(a, row) for row in a.variants]
    return _rows_section(f"Ablation of trial {a.trial}", ablation_rows(a), notes)


def _rows_section(title: str, rows: list[dict[str, Any]], notes: list[str]) -> Section:
    head = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[fmt_cell(row.get(k, "")) for k in head] for row in rows]
    return Section(title, head, cells, notes)


def to_markdown(name: str, sections: list[Section], report: Report) -> str:
    lines = [f"# Study `{name}`", ""]
    for s in sections:
        lines += [f"## {s.title}", "", "| " + " | ".join(s.head) + " |"]
        lines += ["|" + "---|" * len(s.head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in s.rows]
        lines.append("")
        lines += [line for note in s.notes for line in (note, "")]
    lines += ["## Plots", ""]
    for file, caption in report.images.items():
        lines += [f"### {caption}", "", f"![{caption}]({file})", ""]
    for caption, reason in report.skipped.items():
        lines.append(f"- not drawn: {caption} ({reason})")
    return "\n".join(lines).rstrip() + "\n"


def to_html(name: str, sections: list[Section], report: Report) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(name)}</title><style>body{{font-family:sans-serif;max-width:1100px;"
        "margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 8px}img{max-width:100%}</style></head><body>",
        f"<h1>Study {e(name)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2><table>")
        if any(s.head):
            parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in s.head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in s.rows]
        parts.append("</table>")
        parts += [f"<p>{e(note)}</p>" for note in s.notes]
    parts.append("<h2>Plots</h2>")
    for file, caption in report.images.items():
        parts.append(f"<h3>{e(caption)}</h3><img src='{e(file)}' alt='{e(caption)}'>")
    parts += [f"<p>not drawn: {e(c)} ({e(r)})</p>" for c, r in report.skipped.items()]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
