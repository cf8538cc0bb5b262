"""A downstream project, as a user writes one: its own networks and its own LightningDataModule,
a `pyproject.toml` that declares them as regzoo entry points, and a study config.

`write_project(folder, package)` writes it; the tests import it by path (`package.module:Name`
on sys.path) or build and install it as a wheel (tests/test_byo_install.py).
"""

from __future__ import annotations

from pathlib import Path

MODELS = '''\
"""Networks the zoo lacks: a residual MLP with layer norm (batches), a GRU (does not)."""

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class ResidualMLP(nn.Module):
    def __init__(self, input_shape, num_classes, width: int = 16, blocks: int = 1):
        super().__init__()
        self.inp = nn.Linear(math.prod(input_shape), width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
            for _ in range(blocks)
        )
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.inp(x.flatten(1))  # (B, C, L) -> (B, width)
        for block in self.blocks:
            h = h + block(h)  # the residual connection
        return self.out(h)


class GRUNet(nn.Module):
    def __init__(self, input_shape, num_classes, hidden: int = 8):
        super().__init__()
        self.gru = nn.GRU(input_shape[0], hidden, batch_first=True)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        h, _ = self.gru(x.transpose(1, 2))  # (B, C, L) -> (B, L, hidden)
        return self.out(h[:, -1])


class WaveModule(L.LightningModule):
    """A LightningModule of its own: its steps, its optimizer, its validation metrics."""

    def __init__(self, input_shape, num_classes, lr: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''

DATA = '''\
"""Noisy sine waves of three frequencies: a LightningDataModule of the user's own."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset, random_split


class Waves(L.LightningDataModule):
    def __init__(self, batch_size: int = 32, n: int = 300, length: int = 16,
                 noise: float = 1.0, seed: int = 0):
        super().__init__()
        self.batch_size, self.n, self.length = batch_size, n, length
        self.noise, self.seed = noise, seed
        self.num_classes = 3  # what regzoo reads; the input shape comes from a batch

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(self.seed)  # the study's seed: one split for all runs
        y = torch.randint(0, 3, (self.n,), generator=g)
        t = torch.linspace(0, 1, self.length)
        x = torch.sin(2 * torch.pi * (y[:, None] + 1) * t)
        x = x + self.noise * torch.randn(self.n, self.length, generator=g)
        data = TensorDataset(x[:, None, :], y)  # (N, 1, length)
        self.train, self.val, self.test = random_split(data, [0.6, 0.2, 0.2], generator=g)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=self.batch_size)


class Unlabelled(Waves):
    """Says no num_classes: refused before any trial."""

    def __init__(self, batch_size: int = 32):
        super().__init__(batch_size=batch_size)
        del self.num_classes
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{package}"
version = "0.1.0"
dependencies = ["regzoo"]

[project.entry-points."regzoo.models"]
resmlp = "{package}.models:ResidualMLP"
wavegru = "{package}.models:GRUNet"

[project.entry-points."regzoo.datamodules"]
waves = "{package}.data:Waves"

[tool.setuptools]
packages = ["{package}"]
"""

STUDY = """\
name: {name}
model: {{name: {model}, width: 16}}
data: {{name: {data}, batch_size: 32}}
trainer: {{max_epochs: 2, accelerator: cpu}}
search:
  model.lr: {{float: [0.003, 0.03], log: true}}
  model.l2: {{float: [1.0e-5, 1.0e-3], log: true}}
trials: 4
population: {{size: 2}}
pruner: {{name: none}}
confirm: {{top: 1, seeds: 2}}
wandb: {{mode: disabled}}
"""


def write_project(folder: Path, package: str) -> Path:
    """The project's files in `folder`: `<package>/models.py`, `<package>/data.py` and a
    `pyproject.toml` with its entry points. Returns `folder`."""
    source = folder / package
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "models.py").write_text(MODELS)
    (source / "data.py").write_text(DATA)
    (folder / "pyproject.toml").write_text(PYPROJECT.format(package=package))
    return folder


def write_study(path: Path, *, name: str, model: str, data: str) -> Path:
    """A study of `model` on `data` (names as a config gives them): 4 trials of 2 epochs,
    batched 2 at a time, the best confirmed with 2 seeds."""
    path.write_text(STUDY.format(name=name, model=model, data=data))
    return path
