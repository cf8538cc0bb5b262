"""A model name is a registered name, an entry point or an import path (issue 25): entry points
of an installed distribution (a real `.dist-info` folder on sys.path, as pip leaves one) are
listed without importing them and trusted by `load_model`; what is recorded for a user's class
is its import path, even when it was registered under a name in this process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from regzoo.zoo import (
    Classifier,
    create_model,
    list_models,
    load_model,
    model_sources,
    register_model,
    save_pretrained,
)
from regzoo.zoo._registry import MODELS, trusted_model

NETWORK = """\
from torch import nn

class Net(nn.Module):
    def __init__(self, input_shape, num_classes, hidden: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], hidden), nn.Tanh(),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.body(x)
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution `tinynets` as pip installs one: its module and a `.dist-info` declaring
    the entry point `tinynet = tinynets_mod:Net` of group `regzoo.models`."""
    (tmp_path / "tinynets_mod.py").write_text(NETWORK)
    info = tmp_path / "tinynets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinynets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[regzoo.models]\ntinynet = tinynets_mod:Net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tinynets_mod", raising=False)
    return "tinynets_mod:Net"


def test_an_entry_point_is_listed_and_trusted_without_being_imported(installed: str) -> None:
    assert "tinynet" in list_models()
    assert model_sources()["tinynet"] == f"entry point {installed} (package tinynets)"
    assert trusted_model(installed) and trusted_model("tinynet")
    assert "tinynets_mod" not in sys.modules  # listing and trusting imported nothing
    model = create_model("tinynet", input_shape=(6,), num_classes=2, hidden=3)
    assert model.model_name == installed  # the import path, not the entry point's name


def test_an_entry_points_hub_folder_loads_without_trust_code(
    installed: str, tmp_path: Path
) -> None:
    model = create_model(installed, input_shape=(6,), num_classes=2)
    folder = save_pretrained(model, tmp_path / "hub")
    x = torch.randn(5, 6)
    assert torch.equal(load_model(folder)(x), model(x))


class Mine(Classifier):
    """A user's Classifier, registered by name in the test's process."""

    def build_network(self) -> torch.nn.Module:
        return torch.nn.Linear(self.input_shape[-1], self.hp.num_classes)


def test_a_class_registered_by_name_records_its_import_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MODELS, "_classes", dict(MODELS._classes))  # restored after the test
    path = f"{__name__}:Mine"
    assert not trusted_model(path)
    register_model("mine-for-test")(Mine)
    model = create_model("mine-for-test", input_shape=(3,), num_classes=2)
    # Spawned workers and load_model find it by this, not by a name only this process knows.
    assert model.model_name == path and trusted_model(path)


def test_a_zoo_model_keeps_its_registered_name() -> None:
    assert create_model("fnn", input_shape=(4,), num_classes=2).model_name == "fnn"
    assert model_sources()["fnn"] == "regzoo"
