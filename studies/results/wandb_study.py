"""A study's own W&B run (`job_type="study"`, in the study's group, beside its trials' runs).

Written when `regzoo run` ends and refreshed by `regzoo report`, `regzoo confirm` and
`regzoo ablate` (the same run id, resumed):

- config: `study`, `objective`, `direction` and the study's config (its `config` user attr);
- `trials`: a table of every trial in the storage (all states): number, state, objective (one
  column per objective in a multi-objective study, whose `pareto_front` table holds its front),
  parameters, test metrics, epochs, `pruned_at`, the trial's W&B run id;
- `importances`: Optuna's fANOVA parameter importances as a bar chart (skipped, with a note in
  the summary's `notes/importances`, when the trials do not allow it);
- `optimization_history`: the objective per complete trial and the best so far (line series);
- `intermediate_values`: the objective after each epoch, one series per trial, named
  `trial 3 (pruned)`, so pruned trials stand out;
- `report/<plot>`: the PNGs of `write_report` as images (`report/ablation`: the forest plot of
  the study's ablation, where it has one);
- `confirm` and `ablation`: the tables of the study's last `regzoo confirm` and `regzoo ablate`
  (docs/verdicts.md), where it has them, numbers as numbers;
- summary: `best/number`, `best/value`, `best/params/<key>`, `best/test/...`, `best/epochs`,
  the trial counts `trials/<state>`, and where the study has a confirmation, the confirmed
  configuration's `confirmed/test/acc` (mean over its seeds), `confirmed/test/acc_low` and
  `confirmed/test/acc_high` (95% CI), `confirmed/seeds` and `confirmed/trial`;
- artifact `<study>-best` (type `model`, alias `best`): the best trial's hub folder
  (`model.safetensors`, `config.json`, `README.md`), which `regzoo.load_model` reads and every
  reuse format (pt2, ONNX) is exported from.

Experiments log their figure and table to their study's run (`log_experiment`).

Offline, the run is written under `<save_dir>/wandb/offline-run-*` (the study's folder,
`runs/<study>/<study id>/`, not `runs/wandb/` beside the trial runs), and `wandb sync` uploads it.
The run is always finished; the process environment is never changed. A failure to write the
study run is a warning on the console, never the failure of the command that trained the study.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from regzoo._checks import one_line
from regzoo.studies.loop.read import is_multi_objective, objective_names, pareto_front
from regzoo.studies.trial.spec import FINAL_PREFIXES

JOB_TYPE = "study"
STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
RUN_ID_ATTR = "wandb_run_id"  # set on each trial by its own W&B run (when tracked)


def run_id(study: optuna.Study) -> str:
    """The study run's id: stable per study (name + the study's uid), so reruns resume it."""
    uid = (
        str(study.user_attrs.get("uid", ""))
        or hashlib.sha1(study.study_name.encode()).hexdigest()[:8]
    )
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{study.study_name}-{uid}-study").strip("-")
    if len(text) > 64:  # W&B's limit on run ids
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        text = f"{text[:47]}-{digest}-study"
    return text


def artifact_name(study: optuna.Study) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{study.study_name}-best")


def log_study(
    study: optuna.Study,
    *,
    mode: str,
    project: str,
    entity: str | None,
    save_dir: Path,
    report_dir: Path | None = None,
    report_images: dict[str, str] | None = None,
    storage: str = "",
    console: Console | None = None,
) -> str | None:
    """Write (or refresh) the study's W&B run; its id, or None when disabled or not written.

    `report_dir`: a folder `write_report` wrote, with `report_images` (`Report.images`: file
    name -> caption; default: its PNGs). Without it the report is drawn into a temporary
    folder, so that its PNGs are logged either way. `storage`: the study's storage URL, where
    its verdicts' runs are (without it, no verdict is logged).
    """
    if mode == "disabled":
        return None
    console = console or Console(quiet=True)
    with (
        _unless_failing(console),
        _study_run(study, mode=mode, project=project, entity=entity, save_dir=save_dir) as run,
    ):
        _log_trials(run, study)
        _log_charts(run, study, console)
        _log_best(run, study, console, storage)
        _log_verdicts(run, study, storage)
        if report_dir is not None:
            _log_report(run, report_dir, report_images)
        else:
            with tempfile.TemporaryDirectory(prefix="regzoo-report-") as tmp:
                _log_report(run, Path(tmp), None, draw=study, storage=storage)
        return str(run.id)
    return None


def log_experiment(
    study: optuna.Study,
    *,
    mode: str,
    project: str,
    entity: str | None,
    save_dir: Path,
    figure: Path,
    rows: list[dict[str, Any]],
    title: str = "",
    console: Console | None = None,
) -> str | None:
    """An experiment's study run: its trials table, its figure (`experiment/figure`) and its
    table (`experiment/table`); the run's id, or None when disabled or not written."""
    if mode == "disabled":
        return None
    console = console or Console(quiet=True)
    with (
        _unless_failing(console),
        _study_run(study, mode=mode, project=project, entity=entity, save_dir=save_dir) as run,
    ):
        _log_trials(run, study)
        run.log(
            {
                "experiment/figure": _wandb().Image(str(figure), caption=title or None),
                "experiment/table": _rows_table(rows),
            }
        )
        return str(run.id)
    return None


@contextmanager
def _unless_failing(console: Console) -> Iterator[None]:
    """A study run that cannot be written is a console note, never the failure of the command
    that trained the study (the study itself is stored)."""
    try:
        yield
    except Exception as exc:
        console.print(f"[yellow]W&B study run not written:[/] {one_line(exc, lines=1)}")


def _wandb() -> Any:
    import wandb

    return wandb


@contextmanager
def _study_run(
    study: optuna.Study, *, mode: str, project: str, entity: str | None, save_dir: Path
) -> Iterator[Any]:
    """The study's run, open for the block and always finished after it."""
    wandb = _wandb()
    save_dir = Path(save_dir).resolve()  # absolute: wandb's service has its own working dir
    save_dir.mkdir(parents=True, exist_ok=True)
    try:
        config = json.loads(study.user_attrs.get("config", "{}") or "{}")
    except json.JSONDecodeError:
        config = {}
    config = {
        **config,
        "study": study.study_name,
        "objective": study.user_attrs.get("objective", "objective"),
        "direction": ", ".join(d.name.lower() for d in study.directions),
    }
    run = wandb.init(
        project=project,
        entity=entity,
        group=study.study_name,
        job_type=JOB_TYPE,
        name=f"{study.study_name}-study",
        id=run_id(study),
        resume="allow",
        dir=str(save_dir),
        mode=mode,
        reinit="create_new",  # never finishes a run that someone else has open
        config=config,
        settings=wandb.Settings(silent=True, console="off"),
    )
    exit_code = 1
    try:
        yield run
        exit_code = 0
    finally:
        run.finish(exit_code=exit_code)


def _cell(value: Any) -> Any:
    """A table cell: non-finite floats and missing values as None, other objects as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def trial_rows(study: optuna.Study) -> tuple[list[str], list[list[Any]]]:
    """The trials table: columns and one row per trial of the storage, in trial order."""
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    tests = sorted({k for t in trials for k in t.user_attrs if k.startswith(FINAL_PREFIXES)})
    goals = objective_names(study) if is_multi_objective(study) else ["objective"]
    columns = ["number", "state", *goals, *params, *tests, "epochs", "pruned_at", RUN_ID_ATTR]
    rows = [
        [
            t.number,
            STATES.get(t.state, t.state.name.lower()),
            *(_cell(v) for v in (t.values or [None] * len(goals))),
            *(_cell(t.params.get(k)) for k in params),
            *(_cell(t.user_attrs.get(k)) for k in tests),
            _cell(t.user_attrs.get("epochs")),
            _cell(t.user_attrs.get("pruned_at")),
            _cell(t.user_attrs.get(RUN_ID_ATTR)),
        ]
        for t in trials
    ]
    return columns, rows


def _log_trials(run: Any, study: optuna.Study) -> None:
    columns, rows = trial_rows(study)
    table = _wandb().Table(columns=columns, data=rows, allow_mixed_types=True)
    counts = {state: 0 for state in STATES.values()}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    run.log({"trials": table})
    run.summary.update({f"trials/{state}": n for state, n in counts.items()})


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    from regzoo.studies.loop.read import ranked_trials

    return [t for t in ranked_trials(study) if all(math.isfinite(v) for v in t.values)]


def _log_charts(run: Any, study: optuna.Study, console: Console) -> None:
    wandb = _wandb()
    metric = str(study.user_attrs.get("objective", "objective"))
    charts: dict[str, Any] = {}
    importances, reason = _importances(study)
    if importances:
        table = wandb.Table(data=[[k, v] for k, v in importances.items()],
                            columns=["parameter", "importance"])  # fmt: skip
        charts["importances"] = wandb.plot.bar(
            table, "parameter", "importance", title=f"Parameter importances for {metric} (fANOVA)"
        )
    else:
        run.summary["notes/importances"] = reason
        console.print(f"  [yellow]W&B: no importances[/]: {reason}", soft_wrap=True)
    complete = sorted(_ranked(study), key=lambda t: t.number)
    if complete:
        numbers = [t.number for t in complete]
        values = [float(t.values[0]) for t in complete]
        pick = max if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else min
        best = [pick(values[: i + 1]) for i in range(len(values))]
        charts["optimization_history"] = wandb.plot.line_series(
            xs=numbers, ys=[values, best], keys=[metric, "best so far"],
            title=f"Optimization history of {metric}", xname="trial",
        )  # fmt: skip
    series = [
        (t, sorted((s, v) for s, v in t.intermediate_values.items() if math.isfinite(v)))
        for t in study.get_trials(deepcopy=False)
    ]
    series = [(t, points) for t, points in series if points]
    if series:
        charts["intermediate_values"] = wandb.plot.line_series(
            xs=[[s for s, _ in points] for _, points in series],
            ys=[[v for _, v in points] for _, points in series],
            keys=[f"trial {t.number} ({STATES.get(t.state, t.state.name.lower())})"
                  for t, _ in series],
            title=f"{metric} after each epoch (pruned trials stop early)", xname="epoch",
        )  # fmt: skip
    if is_multi_objective(study):
        charts["pareto_front"] = _front_table(study)
    if charts:
        run.log(charts)


def _front_table(study: optuna.Study) -> Any:
    """The Pareto front: each front trial's objective values and parameters, as a table (W&B's
    own scatter plot of it is one click away)."""
    front = pareto_front(study)
    goals = objective_names(study)
    params = list(dict.fromkeys(k for t in front for k in t.params))
    rows = [
        [t.number, *(_cell(v) for v in t.values), *(_cell(t.params.get(k)) for k in params)]
        for t in front
    ]
    return _wandb().Table(columns=["number", *goals, *params], data=rows, allow_mixed_types=True)


def _importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importances, or ({}, why not)."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    complete = _ranked(study)
    if len(complete) < 2:
        return {}, f"{len(complete)} complete trial(s); importances need 2 or more"
    varying = {k for t in complete for k in t.params if t.params[k] != complete[0].params.get(k)}
    if not varying:
        return {}, "no parameter varies between the complete trials"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = get_param_importances(
                study,
                evaluator=FanovaImportanceEvaluator(seed=0),
                target=(lambda t: t.values[0]) if is_multi_objective(study) else None,
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return {}, one_line(exc, lines=1)
    return {k: float(v) for k, v in found.items()}, ""


def _log_best(run: Any, study: optuna.Study, console: Console, storage: str) -> None:
    """The best trial in the summary, and its model as the `best` artifact."""
    ranked = _ranked(study)
    if not ranked:
        run.summary["notes/best"] = "no complete trial yet"
        return
    if is_multi_objective(study):  # no single best: the front is the `pareto_front` table
        front = [t.number for t in pareto_front(study)]
        run.summary["front/numbers"] = front
        run.summary["notes/best"] = "a multi-objective study: no best model, see pareto_front"
        return
    best = ranked[0]
    metrics = {k: _cell(v) for k, v in best.user_attrs.items() if k.startswith("test/")}
    summary: dict[str, Any] = {"best/number": best.number, "best/value": best.values[0]}
    summary.update({f"best/params/{k}": _cell(v) for k, v in best.params.items()})
    summary.update({f"best/{k}": v for k, v in metrics.items()})
    for key in ("epochs", RUN_ID_ATTR):
        if key in best.user_attrs:
            summary[f"best/{key}"] = _cell(best.user_attrs[key])
    run.summary.update(summary)
    with tempfile.TemporaryDirectory(prefix="regzoo-best-") as tmp:
        folder = _hub_folder(study, best, Path(tmp) / "model", console, storage)
        if folder is None:
            return
        wandb = _wandb()
        artifact = wandb.Artifact(
            artifact_name(study),
            type="model",
            description=f"best trial {best.number} of study {study.study_name}: hub folder "
            "(regzoo.load_model(folder))",
            metadata={
                "study": study.study_name,
                "trial": best.number,
                "objective": study.user_attrs.get("objective", "objective"),
                "value": best.values[0],
                "params": {k: _cell(v) for k, v in best.params.items()},
                "metrics": metrics,
            },
        )
        # File by file: add_dir prints a line of its own whatever the run's `silent`. Each is
        # copied into W&B's staging area, so the temporary folder may go.
        for path in sorted(folder.iterdir()):
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact, aliases=["best"])


def _hub_folder(
    study: optuna.Study, trial: FrozenTrial, out: Path, console: Console, storage: str
) -> Path | None:
    """The trial's model as a hub folder (as `regzoo export --format hub`), or None (noted)."""
    from regzoo.studies.loop.read import ResultError, checkpoint_of
    from regzoo.studies.results.export import model_card
    from regzoo.zoo import load_model, save_pretrained

    try:
        model = load_model(checkpoint_of(trial), trust_code=True)  # the study's own model
    except (ResultError, OSError, ValueError) as exc:
        console.print(f"  [yellow]W&B: no model artifact[/]: {one_line(exc, lines=1)}")
        return None
    return save_pretrained(model, out, card=model_card(study, trial, model, storage=storage))


def _log_verdicts(run: Any, study: optuna.Study, storage: str) -> None:
    """The confirmation's and the ablation's tables, and the confirmed figure in the summary."""
    from regzoo.studies.verdicts.read import read_verdicts
    from regzoo.studies.verdicts.tables import METRIC, ablation_rows, confirm_rows

    verdicts = read_verdicts(study, storage)
    tables = {}
    if verdicts.confirmation is not None:
        tables["confirm"] = _rows_table(confirm_rows(verdicts.confirmation))
        best = verdicts.confirmed()
        assert best is not None
        run.summary.update(
            {
                f"confirmed/{METRIC}": _cell(best.mean),
                f"confirmed/{METRIC}_low": _cell(best.low),
                f"confirmed/{METRIC}_high": _cell(best.high),
                "confirmed/seeds": best.n,
                "confirmed/trial": verdicts.confirmation.candidates[0].trial,
            }
        )
    if verdicts.ablation is not None:
        tables["ablation"] = _rows_table(ablation_rows(verdicts.ablation))
    if tables:
        run.log(tables)


def _rows_table(rows: list[dict[str, Any]]) -> Any:
    """A W&B table of plain rows: every key a column, in first-seen order, numbers as numbers."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    data = [[_cell(row.get(c)) for c in columns] for row in rows]
    return _wandb().Table(columns=columns, data=data, allow_mixed_types=True)


def _log_report(
    run: Any,
    report_dir: Path,
    images: dict[str, str] | None,
    draw: optuna.Study | None = None,
    storage: str = "",
) -> None:
    """The report's PNGs as images, `report/<file stem>`; `draw`: write the report first."""
    from regzoo.studies.results.report import write_report

    if draw is not None:
        images = write_report(draw, report_dir, storage=storage).images
    elif images is None:
        images = {p.name: p.stem.replace("_", " ") for p in sorted(report_dir.glob("*.png"))}
    wandb = _wandb()
    logged = {
        f"report/{Path(name).stem}": wandb.Image(str(report_dir / name), caption=caption)
        for name, caption in images.items()
        if (report_dir / name).is_file()
    }
    if logged:
        run.log(logged)


def log_study_after_run(
    study: optuna.Study, cfg: Any, mode: str, console: Console, *, storage: str = ""
) -> str | None:
    """At the end of `regzoo run` (alone, or a `--workers` parent), `regzoo confirm` and
    `regzoo ablate`: the study run of `cfg`'s study in its folder
    (`runs_dir/<study>/<study id>/wandb/`), the report drawn into a temporary folder for its
    PNGs, the verdicts found in `storage`; prints the `wandb sync` command when offline."""
    from regzoo.studies.loop.study import study_folder

    save_dir = study_folder(study, cfg.runs_dir)
    found = log_study(
        study,
        mode=mode,
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        save_dir=save_dir,
        storage=storage,
        console=console,
    )
    print_written(found, mode, save_dir, console)
    return found


def print_written(found: str | None, mode: str, save_dir: Path, console: Console) -> None:
    """One line saying where the study run went (offline: how to upload it)."""
    from regzoo.studies.trial import tracking

    if found is None:
        return
    if mode == "offline":
        where = f"offline: {tracking.sync_command(save_dir)}"
        console.print(f"[bold]wandb[/]     study run {found} {where}", soft_wrap=True)
    else:
        console.print(f"[bold]wandb[/]     study run {found}", soft_wrap=True)
