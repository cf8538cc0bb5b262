"""Lightning callbacks that record what a normal study does not: decision boundaries, parameter
trajectories, how far the weights moved from their initialization, gradient norms.

Each probe writes its arrays into the trial's directory (the Trainer's `default_root_dir`) when
training ends, and `summary()` gives the numbers stored as the trial's user attributes.

A probe also serves a member of a population (`regzoo.studies.population`): the same records
from the member hooks `PopulationModule` calls with a `MemberView` (`member_fit_start`,
`member_step`, `member_epoch_end`, `member_end`), which hand it the member's model, gradients,
metrics, learning rate and folder instead of a Trainer's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

if TYPE_CHECKING:
    from regzoo.studies.population.module import MemberView


def _trial_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.default_root_dir)


def _weights(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The network's weight matrices and kernels (not biases), input layer first."""
    net = getattr(module, "net", module)
    return [(n, p) for n, p in net.named_parameters() if p.ndim >= 2]


class BoundaryProbe(L.Callback):
    """Class probabilities on a grid over a 2-D input square, at the best epoch and at the end.

    "Best" is the epoch with the lowest `val/loss`, the model early stopping would keep. Writes
    `boundary.npz`: grid axes `gx`, `gy`, probabilities `p_best`, `p_final` (R, R, classes),
    and the training and validation points.
    """

    def __init__(self, resolution: int = 150, margin: float = 0.1) -> None:
        self.resolution, self.margin = resolution, margin
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.arrays: dict[str, np.ndarray] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer.datamodule)  # type: ignore[attr-defined]

    def member_fit_start(self, view: MemberView) -> None:
        self._start(view.datamodule)

    def _start(self, datamodule: Any) -> None:
        splits = datamodule.splits
        x_train, y_train = splits["train"]
        x_val, y_val = splits["val"]
        if x_train.ndim != 2 or x_train.shape[1] != 2:
            raise ValueError(
                f"BoundaryProbe needs 2-D points, got inputs of shape {tuple(x_train.shape[1:])}"
            )
        points = torch.cat([x_train, x_val])  # (N, 2)
        low, high = points.min(0).values, points.max(0).values
        pad = self.margin * (high - low)
        gx = torch.linspace(float(low[0] - pad[0]), float(high[0] + pad[0]), self.resolution)
        gy = torch.linspace(float(low[1] - pad[1]), float(high[1] + pad[1]), self.resolution)
        self.arrays = {
            "gx": gx.numpy(),
            "gy": gy.numpy(),
            "x_train": x_train.numpy(),
            "y_train": y_train.numpy(),
            "x_val": x_val.numpy(),
            "y_val": y_val.numpy(),
        }
        xx, yy = torch.meshgrid(gx, gy, indexing="xy")  # (R, R) each, rows follow y
        self.grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)  # (R·R, 2)

    @torch.no_grad()
    def probabilities(self, pl_module: L.LightningModule) -> np.ndarray:
        was_training = pl_module.training
        pl_module.eval()
        p = pl_module(self.grid.to(pl_module.device)).softmax(-1)  # (R·R, classes)
        pl_module.train(was_training)
        return p.reshape(self.resolution, self.resolution, -1).cpu().numpy()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if not trainer.sanity_checking and loss is not None:
            self._seen(float(loss), trainer.current_epoch + 1, pl_module.state_dict)

    def member_epoch_end(self, view: MemberView) -> None:
        loss = view.metrics.get("val/loss")
        if loss is not None:
            self._seen(loss, view.epoch + 1, view.state_dict)

    def _seen(self, loss: float, epoch: int, state: Callable[[], dict[str, torch.Tensor]]) -> None:
        if not loss < self.best_loss:
            return
        self.best_loss, self.best_epoch = loss, epoch
        # A copy of the weights is cheaper than a pass over the grid at every improvement.
        self.best_state = {k: v.detach().clone() for k, v in state().items()}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module, _trial_dir(trainer))

    def member_end(self, view: MemberView) -> None:
        self._finish(view.model(), view.run_dir)

    def _finish(self, model: L.LightningModule, run_dir: Path) -> None:
        self.arrays["p_final"] = self.probabilities(model)
        self.arrays["p_best"] = self.arrays["p_final"]
        if self.best_state is not None:
            final = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(self.best_state)
            self.arrays["p_best"] = self.probabilities(model)
            model.load_state_dict(final)
        np.savez_compressed(run_dir / "boundary.npz", **self.arrays)  # type: ignore[arg-type]

    def summary(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch}


class TrajectoryProbe(L.Callback):
    """All trainable parameters, flattened, at the start and after every epoch: `trajectory.npy`
    of shape (epochs + 1, P); and which of the P entries are weights (`trajectory_weights.npy`)."""

    def __init__(self) -> None:
        self.points: list[np.ndarray] = []

    @staticmethod
    def flat(pl_module: torch.nn.Module) -> np.ndarray:
        params = [p.detach().reshape(-1) for p in pl_module.parameters() if p.requires_grad]
        return torch.cat(params).double().cpu().numpy()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def member_fit_start(self, view: MemberView) -> None:
        self._start(view.model())

    def _start(self, model: torch.nn.Module) -> None:
        self.points = [self.flat(model)]
        mask = [
            torch.full((p.numel(),), p.ndim >= 2) for p in model.parameters() if p.requires_grad
        ]
        self.weight_mask = torch.cat(mask).numpy()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.points.append(self.flat(pl_module))

    def member_epoch_end(self, view: MemberView) -> None:
        self.points.append(self.flat(view.model()))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(_trial_dir(trainer))

    def member_end(self, view: MemberView) -> None:
        self._finish(view.run_dir)

    def _finish(self, run_dir: Path) -> None:
        np.save(run_dir / "trajectory.npy", np.stack(self.points))
        np.save(run_dir / "trajectory_weights.npy", self.weight_mask)


class WeightProbe(L.Callback):
    """Per weight matrix, each epoch: its norm and its distance from the initial weights.

    Writes `weights.npz` (`norm`, `moved`: (epochs + 1, layers)); `summary()` reports, for the
    first (hidden) layer and the output layer, the largest |w|, the distance moved and the
    number of distinct units (rows), which symmetric initializations keep at one.
    """

    def __init__(self) -> None:
        self.initial: list[torch.Tensor] = []
        self.norm: list[list[float]] = []
        self.moved: list[list[float]] = []
        self.final: dict[str, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def member_fit_start(self, view: MemberView) -> None:
        self._start(view.model())

    def _start(self, model: torch.nn.Module) -> None:
        self.initial = [p.detach().clone() for _, p in _weights(model)]
        self._record(model)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(pl_module)

    def member_epoch_end(self, view: MemberView) -> None:
        self._record(view.model())

    @torch.no_grad()
    def _record(self, model: torch.nn.Module) -> None:
        weights = [p.detach() for _, p in _weights(model)]
        self.norm.append([float(w.norm()) for w in weights])
        pairs = zip(weights, self.initial, strict=True)
        self.moved.append([float((w - w0).norm()) for w, w0 in pairs])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module, _trial_dir(trainer))

    def member_end(self, view: MemberView) -> None:
        self._finish(view.model(), view.run_dir)

    @torch.no_grad()
    def _finish(self, model: torch.nn.Module, run_dir: Path) -> None:
        weights = [p.detach() for _, p in _weights(model)]
        for tag, index in (("hidden", 0), ("output", len(weights) - 1)):
            w = weights[index].reshape(len(weights[index]), -1)  # (units, fan_in)
            self.final[f"{tag}_max_abs"] = float(w.abs().max())
            self.final[f"{tag}_moved"] = self.moved[-1][index]
            self.final[f"{tag}_distinct_units"] = int(torch.unique(w, dim=0).shape[0])
        self.final["weight_norm"] = float(torch.cat([w.reshape(-1) for w in weights]).norm())
        np.savez_compressed(
            run_dir / "weights.npz", norm=np.array(self.norm), moved=np.array(self.moved)
        )

    def summary(self) -> dict[str, Any]:
        return dict(self.final)


class GradNormProbe(L.Callback):
    """The global L2 norm of the gradient at every optimizer step, averaged per epoch:
    `grad_norms.npy` of shape (epochs,)."""

    def __init__(self) -> None:
        self.step_norms: list[float] = []
        self.epoch_norms: list[float] = []

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        self._step([p.grad for p in pl_module.parameters() if p.grad is not None])

    def member_step(self, view: MemberView) -> None:
        self._step(view.grads)

    def _step(self, grads: Sequence[torch.Tensor]) -> None:
        flat = [g.detach().reshape(-1) for g in grads]
        self.step_norms.append(float(torch.cat(flat).norm()) if flat else 0.0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch()

    def member_epoch_end(self, view: MemberView) -> None:
        self._epoch()

    def _epoch(self) -> None:
        if self.step_norms:
            self.epoch_norms.append(float(np.mean(self.step_norms)))
        self.step_norms = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        np.save(_trial_dir(trainer) / "grad_norms.npy", np.array(self.epoch_norms))

    def member_end(self, view: MemberView) -> None:
        np.save(view.run_dir / "grad_norms.npy", np.array(self.epoch_norms))

    def summary(self) -> dict[str, Any]:
        norms = [n for n in self.epoch_norms if math.isfinite(n)]
        if not norms:
            return {}
        return {"grad_norm_first": norms[0], "grad_norm_median": float(np.median(norms))}


class LrProbe(L.Callback):
    """The learning rate of the first parameter group at every epoch: `lr.npy` of shape
    (epochs,), so a schedule can be checked against its definition."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lrs.append(float(trainer.optimizers[0].param_groups[0]["lr"]))

    def member_epoch_end(self, view: MemberView) -> None:
        self.lrs.append(view.lr)  # the rate this epoch trained with: schedules step after

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        np.save(_trial_dir(trainer) / "lr.npy", np.array(self.lrs))

    def member_end(self, view: MemberView) -> None:
        np.save(view.run_dir / "lr.npy", np.array(self.lrs))


class TruthTableProbe(L.Callback):
    """Accuracy on XOR's truth table, its four inputs placed at the centres of the quadrants of
    the `xor` point set: (−s, −s) → 0, (−s, s) → 1, (s, −s) → 1, (s, s) → 0."""

    def __init__(self, s: float = 0.5) -> None:
        self.inputs = torch.tensor([[-s, -s], [-s, s], [s, -s], [s, s]])  # (4, 2)
        self.targets = torch.tensor([0, 1, 1, 0])
        self.accuracy = math.nan

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(pl_module)

    def member_end(self, view: MemberView) -> None:
        self._check(view.model())

    @torch.no_grad()
    def _check(self, model: L.LightningModule) -> None:
        was_training = model.training
        model.eval()
        predicted = model(self.inputs.to(model.device)).argmax(-1).cpu()  # (4,)
        model.train(was_training)
        self.accuracy = float((predicted == self.targets).float().mean())

    def summary(self) -> dict[str, Any]:
        return {"truth_table_acc": self.accuracy}
