"""A saved W&B workspace view of a study: `regzoo wandb-workspace NAME`.

The view reads the runs a study's trials logged (job_type "trial", group = the study name):
parallel coordinates from the searched parameters (config) to the objective's best value
(summary `best/<metric>`), a parameter-importance panel for that value, the value against the
trial number, and the per-epoch validation curves. `build_workspace` only describes the view
(no network); `save_workspace` saves it, which needs a W&B login and the network, and the
optional package `wandb-workspaces` (`pip install 'regzoo[wandb-workspaces]'`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regzoo._checks import one_line
from regzoo.studies.loop.read import ResultError, load_study

if TYPE_CHECKING:
    import optuna
    from wandb_workspaces.workspaces import Workspace

EXTRA = "pip install 'regzoo[wandb-workspaces]'"
TRIAL_JOB_TYPE = "trial"
CURVES = ("val/acc", "val/loss")  # logged once per epoch, with step metric `epoch`
STEP = "epoch"
# What a filter string can quote: W&B's filter expressions have no escapes (regzoo's study
# names match `^[A-Za-z0-9][\w.-]*$`; a study made by hand may not).
_QUOTABLE = re.compile(r"^[^'\"\\\n]+$")


@dataclass(frozen=True)
class StudyView:
    """What the view needs from a study: read from its storage, no network."""

    name: str
    searched: tuple[str, ...]
    objective: str
    direction: str
    project: str
    entity: str | None


def _require_extra() -> None:
    try:  # the package itself first: a blocked (None) `wandb_workspaces` fails here
        import wandb_workspaces
        import wandb_workspaces.reports.v2
        import wandb_workspaces.workspaces  # noqa: F401
    except ImportError:
        raise ResultError(f"the W&B workspace needs the wandb-workspaces extra: {EXTRA}") from None


def best_key(metric: str) -> str:
    """The summary key of a trial's best value of `metric` (`best/val/acc`)."""
    return f"best/{metric}"


def build_workspace(
    study_name: str,
    *,
    searched: Sequence[str],
    objective: str,
    direction: str,
    project: str,
    entity: str | None,
) -> Workspace:
    """The workspace view of the study's trial runs; builds it only (no network).

    `searched` are the dotted config keys of the search space (`model.lr`); `entity` None is
    left empty, for `save_workspace` to fill in with the login's default entity.
    """
    _require_extra()
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    if not _QUOTABLE.match(study_name):
        raise ResultError(
            f"study {study_name!r}: a W&B filter cannot match a name with quotes, backslashes "
            "or newlines"
        )
    if direction not in ("maximize", "minimize"):
        raise ResultError(f"objective direction {direction!r}: allowed maximize, minimize")
    best = best_key(objective)
    maximize = direction == "maximize"
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key)) for key in searched]
    # Better is up on every axis: a minimized objective's axis is inverted.
    columns.append(
        wr.ParallelCoordinatesPlotColumn(
            metric=wr.SummaryMetric(best), inverted=None if maximize else True
        )
    )
    panels: list[Any] = [
        wr.ParallelCoordinatesPlot(
            title=f"searched parameters -> {best} ({direction})", columns=columns
        ),
        wr.ParameterImportancePlot(with_respect_to=best),
        wr.ScatterPlot(
            title=f"{best} by trial",
            x=wr.Config("trial"),
            y=wr.SummaryMetric(best),
            # The best so far, as a line.
            running_ymax=True if maximize else None,
            running_ymin=None if maximize else True,
        ),
        *(wr.LinePlot(title=f"{curve} per epoch", x=STEP, y=[curve]) for curve in CURVES),
    ]
    return ws.Workspace(
        name=f"regzoo: {study_name}",
        entity=entity or "",
        project=project,
        sections=[ws.Section(name=f"study {study_name}", panels=panels, is_open=True)],
        runset_settings=ws.RunsetSettings(
            filters=ws.And(
                ws.Metric("Group") == study_name, ws.Metric("JobType") == TRIAL_JOB_TYPE
            ),
        ),
    )


def study_view(
    study: optuna.Study, *, project: str | None = None, entity: str | None = None
) -> StudyView:
    """The searched keys, objective and W&B project of a study, from its stored config."""
    raw = study.user_attrs.get("config")
    try:
        config = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        config = {}
    if not isinstance(config, dict):
        config = {}
    search = config.get("search") or {}
    searched = tuple(search) if isinstance(search, dict) else ()
    if not searched:  # a study without a stored config: the parameters its trials drew
        names = {n for t in study.get_trials(deepcopy=False) for n in t.params}
        searched = tuple(sorted(names))
    objective = config.get("objective") or {}
    if isinstance(objective, list):  # a multi-objective study: the first picks epochs
        objective = objective[0]
    metric = objective.get("metric") or study.user_attrs.get("objective")
    if not metric:
        raise ResultError(
            f"study {study.study_name!r} stores no objective metric; run it with `regzoo run`"
        )
    direction = objective.get("direction") or study.direction.name.lower()
    wandb_cfg = config.get("wandb") or {}
    return StudyView(
        name=study.study_name,
        searched=searched,
        objective=str(metric),
        direction=str(direction),
        project=project or wandb_cfg.get("project") or "regzoo",
        entity=entity or wandb_cfg.get("entity"),
    )


def save_workspace(
    study_name: str, storage_url: str, *, project: str | None = None, entity: str | None = None
) -> str:
    """Save the study's workspace view to W&B and return its URL.

    Everything local is checked first (the extra, the study, the view), then the login, and
    only then the network: a missing login never reaches it, nor prompts.
    """
    _require_extra()
    view = study_view(load_study(study_name, storage_url), project=project, entity=entity)
    workspace = build_workspace(
        view.name,
        searched=view.searched,
        objective=view.objective,
        direction=view.direction,
        project=view.project,
        entity=view.entity,
    )
    from regzoo.studies.trial.tracking import has_login

    if not has_login():
        raise ResultError(
            "the W&B workspace is saved online and needs a login: run `wandb login` "
            "(or set WANDB_API_KEY)"
        )
    try:
        if not workspace.entity:
            import wandb

            workspace.entity = wandb.Api().default_entity or ""
            if not workspace.entity:
                raise ResultError("no default W&B entity for this login; pass --entity")
        workspace.save()
        return str(workspace.url)
    except ResultError:
        raise
    except Exception as exc:  # no network, a rejected key, an unknown entity or project
        raise ResultError(
            f"saving the W&B workspace to {workspace.entity or '?'}/{view.project} failed: "
            f"{type(exc).__name__}: {one_line(exc, lines=1)}"
        ) from None
