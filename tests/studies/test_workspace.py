"""`regzoo wandb-workspace NAME`: the W&B workspace view of a study, checked without the network.

The study is a real (small, untrained) Optuna study in a temporary SQLite storage, with the
config `regzoo run` stores as its "config" user attribute. Saving is stubbed where a login is
pretended; without a login nothing reaches W&B.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import optuna
import pytest
import wandb
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces.workspaces import interface as ws_interface
from wandb_workspaces.workspaces import internal as ws_internal

from regzoo.studies.cli.main import main
from regzoo.studies.loop.read import ResultError
from regzoo.studies.results.workspace import EXTRA, build_workspace, save_workspace, study_view

NAME = "ws-study"
SEARCH = {
    "model.lr": {"float": [1e-4, 1e-1], "log": True},
    "model.optimizer": {"choice": ["sgd", "adam"]},
    "data.augment.rotation": {"float": [0.0, 30.0]},
}


def make_study(
    root: Path,
    *,
    direction: Literal["maximize", "minimize"] = "maximize",
    metric: str = "val/acc",
    entity: str | None = "zoo-team",
) -> str:
    url = f"sqlite:///{root / 'studies.db'}"
    study = optuna.create_study(study_name=NAME, storage=url, direction=direction)
    config = {
        "name": NAME,
        "search": SEARCH,
        "objective": {"metric": metric, "direction": direction},
        "wandb": {"project": "zoo-project", "entity": entity, "mode": None},
    }
    study.set_user_attr("objective", metric)
    study.set_user_attr("config", json.dumps(config, sort_keys=True))
    return url


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return make_study(tmp_path)


@pytest.fixture
def no_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No API key, no ~/.netrc; every way to W&B's servers is recorded, and refused."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    calls: list[str] = []

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(what)
            raise AssertionError(f"{what} called without a login")

        return call

    monkeypatch.setattr(wandb, "Api", refuse("wandb.Api"))
    monkeypatch.setattr(ws_internal, "upsert_view2", refuse("upsert_view2"))
    return calls


def view_of(url: str) -> ws.Workspace:
    view = study_view(optuna.load_study(study_name=NAME, storage=url))
    return build_workspace(
        view.name,
        searched=view.searched,
        objective=view.objective,
        direction=view.direction,
        project=view.project,
        entity=view.entity,
    )


def test_the_view_has_the_four_panels_on_the_study_keys(storage: str) -> None:
    workspace = view_of(storage)
    assert workspace.name == f"regzoo: {NAME}"
    assert (workspace.entity, workspace.project) == ("zoo-team", "zoo-project")
    [section] = workspace.sections
    parallel, importance, scatter, *curves = section.panels

    assert isinstance(parallel, wr.ParallelCoordinatesPlot)
    assert [c.metric for c in parallel.columns] == [
        *(wr.Config(key) for key in sorted(SEARCH)),  # stored sorted, as `regzoo run` does
        wr.SummaryMetric("best/val/acc"),
    ]
    assert isinstance(importance, wr.ParameterImportancePlot)
    assert importance.with_respect_to == "best/val/acc"
    assert isinstance(scatter, wr.ScatterPlot)
    assert (scatter.x, scatter.y) == (wr.Config("trial"), wr.SummaryMetric("best/val/acc"))
    assert scatter.running_ymax is True  # the best so far of a maximized objective
    lines = [p for p in curves if isinstance(p, wr.LinePlot)]
    assert len(lines) == len(curves) == 2
    assert [(p.x, p.y) for p in lines] == [("epoch", ["val/acc"]), ("epoch", ["val/loss"])]


def test_the_saved_spec_names_nested_config_and_summary_keys(storage: str) -> None:
    """The keys as W&B stores them: config `model: {lr: ...}` is `config:model.value.lr`."""
    spec = view_of(storage)._spec["spec"]["section"]
    panels = {p["viewType"]: p["config"] for p in spec["panelBankConfig"]["sections"][0]["panels"]}
    assert [c["accessor"] for c in panels["Parallel Coordinates Plot"]["columns"]] == [
        "config:data.value.augment.rotation",
        "config:model.value.lr",
        "config:model.value.optimizer",
        "summary:best/val/acc",
    ]
    assert panels["Parameter Importance"]["targetKey"] == "best/val/acc"
    scatter = panels["Scatter Plot"]
    assert (scatter["xAxis"], scatter["yAxis"]) == ("config:trial.value", "summary:best/val/acc")
    lines = [p["config"] for p in spec["panelBankConfig"]["sections"][0]["panels"][3:]]
    assert [(c["xAxis"], c["metrics"]) for c in lines] == [
        ("epoch", ["val/acc"]),
        ("epoch", ["val/loss"]),
    ]


def test_the_runset_is_the_study_trial_runs(storage: str) -> None:
    workspace = view_of(storage)
    assert workspace.runset_settings.filters == (
        f"Metric(\"Group\") == '{NAME}' and Metric(\"JobType\") == 'trial'"
    )
    filters = workspace._spec["spec"]["section"]["runSets"][0]["filters"]
    assert [(f["key"], f["op"], f["value"]) for f in filters["filters"]] == [
        ({"section": "run", "name": "group"}, "=", NAME),
        ({"section": "run", "name": "jobType"}, "=", "trial"),
    ]
    assert filters["filters"][1]["connector"] == "AND"


def test_a_minimized_objective_inverts_its_axis_and_tracks_the_minimum(tmp_path: Path) -> None:
    workspace = view_of(make_study(tmp_path, direction="minimize", metric="val/loss"))
    parallel, importance, scatter, *_ = workspace.sections[0].panels
    assert isinstance(parallel, wr.ParallelCoordinatesPlot)
    assert isinstance(importance, wr.ParameterImportancePlot)
    assert isinstance(scatter, wr.ScatterPlot)
    assert parallel.columns[-1].metric == wr.SummaryMetric("best/val/loss")
    assert parallel.columns[-1].inverted is True
    assert importance.with_respect_to == "best/val/loss"
    assert (scatter.running_ymin, scatter.running_ymax) == (True, None)


def test_cli_without_a_login_exits_2_in_one_line_before_the_network(
    storage: str, no_login: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["wandb-workspace", NAME, "--storage", storage]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.strip().splitlines()) == 1
    assert "needs a login" in out.err and "wandb login" in out.err
    assert no_login == []  # neither wandb.Api() nor the upsert was tried


def test_cli_unknown_study_exits_2(
    storage: str, no_login: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["wandb-workspace", "nope", "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'nope' is not in" in err
    assert no_login == []


def test_without_the_extra_one_line_names_it(
    storage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    assert main(["wandb-workspace", NAME, "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert EXTRA in err


class _Api:
    default_entity = "login-team"


def test_with_a_login_the_network_failing_is_one_line(
    storage: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("HOME", str(tmp_path))

    def offline(view: Any) -> Any:
        raise ConnectionError("Max retries exceeded\nwith url: /graphql")

    monkeypatch.setattr(ws_internal, "upsert_view2", offline)
    with pytest.raises(ResultError) as info:
        save_workspace(NAME, storage)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("saving the W&B workspace to zoo-team/zoo-project failed")
    assert "ConnectionError: Max retries exceeded" in text


def test_with_a_login_it_saves_the_view_and_prints_its_url(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Saving stubbed at the GraphQL upsert: what would be sent, and the URL printed. The
    config names no entity: the login's default one is asked for."""
    storage = make_study(tmp_path, entity=None)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("HOME", str(tmp_path))
    sent: list[Any] = []

    def upsert(view: Any) -> dict[str, Any]:
        sent.append(view)
        return {"upsertView": {"view": {"name": "nw-abc123-v", "id": "view-id"}}}

    monkeypatch.setattr(ws_internal, "upsert_view2", upsert)
    monkeypatch.setattr(wandb, "Api", _Api)
    monkeypatch.setattr(ws_interface, "get_app_url", lambda api: "https://wandb.example")
    args = ["wandb-workspace", NAME, "--storage", storage, "--project", "other"]
    assert main(args) == 0
    [view] = sent
    assert (view.entity, view.project) == ("login-team", "other")
    assert view.display_name == f"regzoo: {NAME}"
    panels = view.spec.section.panel_bank_config.sections[0].panels
    assert len(panels) == 5
    assert "https://wandb.example/login-team/other?nw=abc123" in capsys.readouterr().out
