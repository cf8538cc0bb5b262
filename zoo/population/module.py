"""`Population`: K zoo models trained as one batched LightningModule by a plain Trainer.

    models = [create_model("fnn", input_shape=(64,), num_classes=10, lr=lr) for lr in lrs]
    population = Population(models)
    L.Trainer(max_epochs=20).fit(population, datamodule=dm)
    population.member(3)            # an ordinary Classifier: save_pretrained, load_model, ...

One forward pass runs every member (`StackedModels`); `StackedOptimizer` updates each with its
own optimizer kind and hyperparameters, `MemberSchedulers` steps each one's own torch scheduler.
Optimization is manual: one backward pass through the sum of the members' losses gives each
member the gradient of its own loss (their parameters are disjoint).

Validation runs in Lightning's validation loop (`validation_step`), or, for models so small that
the loop's own work per epoch costs more than validating every member, on batches given as
`val=`, inside the epoch end. After it, `members_epoch_end` receives each training member's
epoch metrics, and may `stop` members; a member also stops at its own `max_epochs`. A member
that stops leaves the batch: its rows of the stack, the optimizer's state and the schedules are
dropped, so it costs nothing more. The Trainer stops when no member is left.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from regzoo.zoo.classifier import Classifier
from regzoo.zoo.metrics import calibration_errors
from regzoo.zoo.population.optim import StackedOptimizer
from regzoo.zoo.population.schedule import MemberSchedulers
from regzoo.zoo.population.stack import StackedModels

Batch = tuple[Tensor, Tensor]
Augment = Callable[[Tensor], Tensor]
# The stack holds one dtype: mixed precision has no batched path.
PRECISIONS = {"32-true": torch.float32, "64-true": torch.float64}
T = TypeVar("T")


class Population(L.LightningModule):
    """K compatible `Classifier`s (`check_compatible`) trained together, each its own model.

    Args:
        models: Built models, each with its own hparams (`MEMBER_HPARAMS`: learning rate,
            optimizer and scheduler kinds, penalties, dropout, init, ...) and layer widths,
            and its own initial weights. Their input pipelines are fitted by the Trainer's
            datamodule (`input_statistics()`, as `Classifier.setup` does), else beforehand
            (`fit_input`). Their weights are not changed: `member(i)` copies one out.
        max_epochs: Each member's own last epoch (None: the Trainer's); also the period of
            its `cosine` schedule.
        augment: Each member's own augmentation of its raw training batch (None: none).
        val: Validation batches `(x, y)`, validated in the epoch end instead of Lightning's
            validation loop, which is then not used (a val loader the Trainer gets is skipped).
        log_members: Log the epoch metrics with `self.log`: `member_<i>/train/loss`, `.../acc`,
            `member_<i>/val/loss`, `.../acc`, `.../ece`, and `train/...`, `val/...` as the best
            member still training has them (the lowest loss, the highest accuracy).
        stack: `StackedModels(models)`, when it is already built.

    Example:
        >>> import lightning as L
        >>> from regzoo.zoo import create_model
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> models = [create_model("fnn", input_shape=(4,), num_classes=3, hidden=(8,), lr=lr)
        ...           for lr in (0.1, 0.01)]
        >>> population = Population(models, log_members=False)
        >>> L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
        ...           enable_progress_bar=False, enable_model_summary=False).fit(
        ...     population, DataLoader(TensorDataset(x, y), batch_size=16))
        >>> population.member(1)(x).shape
        torch.Size([64, 3])
    """

    def __init__(
        self,
        models: Sequence[Classifier],
        *,
        max_epochs: Sequence[int | None] | None = None,
        augment: Sequence[Augment | None] | None = None,
        val: Iterable[Batch] | None = None,
        log_members: bool = True,
        stack: StackedModels | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # StackedOptimizer steps in training_step
        self.models = list(models)  # a plain list: Lightning neither moves nor saves them
        n = len(self.models)
        self.stack = StackedModels(self.models) if stack is None else stack
        if self.stack.size != n:
            raise ValueError(f"stack: {self.stack.size} members for {n} models")
        self.max_epochs: list[int | None] = _each("max_epochs", max_epochs, n)
        self.augments: list[Augment | None] = _each("augment", augment, n)
        self.log_members = log_members
        self.optim = StackedOptimizer(self.stack)
        # Made at fit start: a member's cosine runs over the Trainer's max_epochs by default.
        self.schedules: MemberSchedulers | None = None
        self.active = list(range(n))  # the member index of each stacked row
        self.stopped: set[int] = set()  # members that stopped (or stop at this epoch's end)
        self.epoch_metrics: dict[int, dict[str, float]] = {}  # each member's last epoch's
        self.steps = 0  # optimizer steps taken
        self.augmented = any(a is not None for a in self.augments)
        self.penalized = any(hp.get("l1") or hp.get("l2") for hp in self.stack.hparams)
        self._left: dict[int, dict[str, Tensor]] = {}  # stopped members' final state dicts
        self._sums: dict[str, Tensor] = {}
        self._val_outputs: list[Batch] = []  # this epoch's validation (logits (K, B, C), y)
        self._val = None if val is None else list(val)  # moved to the device at fit start
        if self._val is not None:
            # No validation_step is no validation loop, as Lightning reads a module.
            self.validation_step = None  # type: ignore[assignment,method-assign]

    # ---- members in, members out ------------------------------------------------------------

    def member(self, i: int) -> Classifier:
        """Member i (its index in `models`) as an ordinary model, in eval mode: a copy of its
        model with its current weights, or those it stopped with."""
        model = copy.deepcopy(self.models[i])
        state = self._left.get(i)
        if state is not None:
            model.load_state_dict(state)
        else:
            self.stack.load_into(self.active.index(i), model)
        return model.eval()

    def members(self) -> list[Classifier]:
        """Every member, as `member(i)`, in the order of `models`."""
        return [self.member(i) for i in range(len(self.models))]

    def stop(self, i: int) -> None:
        """Member i leaves the batch at the end of this epoch (call it in `members_epoch_end`)."""
        if i not in self.active:
            raise ValueError(f"member {i} is not training (members training: {self.active})")
        self.stopped.add(i)

    # ---- hooks for a subclass -----------------------------------------------------------------

    def members_epoch_end(self, epoch: int, metrics: dict[int, dict[str, float]]) -> None:
        """After each epoch's validation, before the schedules step and stopped members leave.

        Args:
            epoch: The epoch just trained, 0-based.
            metrics: Each training member's epoch metrics by member index, in row order
                (`active`): `train/loss`, `train/acc` and, when it validated, `val/loss`,
                `val/acc`, `val/ece` (`regzoo.zoo.metrics`). Members at their own `max_epochs`
                are already in `stopped`.
        """

    def members_step(self, grads: dict[str, Tensor]) -> None:
        """After each optimizer step: the stacked parameters' gradients, `(K, ...)` by row,
        penalty included, padding masked, before clipping."""

    # ---- training ---------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Each member takes the statistics of the datamodule the Trainer was given, as a lone
        `Classifier` does; every member must have some before it trains."""
        if stage != "fit":
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        offered = getattr(datamodule, "input_statistics", None)
        if callable(offered):
            for row, i in enumerate(self.active):
                model = self.models[i]
                # Its own normalization's statistics of the shared training split (members
                # may differ in it: `stack.SCALINGS`).
                _, stats = offered(model.hp.normalize)
                model.pipeline.load_statistics(stats)
                for name, t in model.pipeline.named_buffers(prefix="pipeline"):
                    self.stack.buffers[name][row].copy_(t)  # stacked under the same names
        fitted = self.stack.buffers["pipeline.fitted"]
        for row, i in enumerate(self.active):
            if not bool(fitted[row]):
                raise ValueError(
                    f"member {i}: normalize={self.models[i].hp.normalize!r} has no statistics: "
                    "train with a regzoo datamodule, or call model.fit_input(x_train) first"
                )

    def on_fit_start(self) -> None:
        precision = str(self.trainer.precision)
        dtype = PRECISIONS.get(precision)
        if dtype is None:
            raise ValueError(
                f"precision={precision!r}: a population trains in {' or '.join(PRECISIONS)}"
            )
        self.stack.to(self.device, dtype)
        if self._val is not None:
            self._val = [
                (x.to(self.device, dtype if x.is_floating_point() else None), y.to(self.device))
                for x, y in self._val
            ]
        if self.schedules is None:
            trainer_epochs = int(self.trainer.max_epochs or 0)
            periods = [self.max_epochs[i] or trainer_epochs for i in self.active]  # cosine's
            self.schedules = MemberSchedulers(self.stack, self.optim, max_epochs=periods)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return []  # none for Lightning: StackedOptimizer steps in training_step

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        self.stack.train()
        own = y.ndim == 2  # (K0, B): each member's own batch (`member_train_dataloader`)
        if own:
            rows = torch.as_tensor(self.active, device=y.device)
            x, y = x[rows], y[rows]  # the members still training
        if self.augmented:
            x = torch.stack(
                [self._augmented(i, x[row] if own else x) for row, i in enumerate(self.active)]
            )  # -> (K, B, *raw)
        logits = self.stack.forward(x, per_member=own or self.augmented)  # (K, B, C)
        ce = member_ce(logits, y)  # (K,)
        names = list(self.stack.params)
        raw = torch.autograd.grad(ce.sum(), [self.stack.params[n] for n in names])
        grads = dict(zip(names, raw, strict=True))
        if self.penalized:  # each member's L1/L2 gradient, added by hand
            self.stack.add_penalty(grads)
        # Members narrower than the stack: their padding gets no gradient, so it stays 0.
        grads = self.stack.mask_grads(grads)
        self.optim.step(grads)
        self.members_step(grads)
        self.steps += 1
        self._accumulate("train", ce.detach(), logits.detach(), y)

    def _augmented(self, i: int, x: Tensor) -> Tensor:
        augment = self.augments[i]
        return augment(x) if augment is not None else x

    # ---- validation ---------------------------------------------------------------------------

    @torch.no_grad()
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x, y = batch
        self.stack.eval()
        logits = self.stack.forward(x)  # (K, B, C)
        self._accumulate("val", member_ce(logits, y), logits, y)

    def on_validation_epoch_start(self) -> None:
        self._drop("val")  # an earlier validation of this epoch (val_check_interval < 1)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._drop("val")
        else:
            self._log("val")

    @torch.no_grad()
    def _validate(self) -> None:
        """Every member on the `val` batches: Lightning's validation loop costs about 0.7 ms
        an epoch of its own (hooks, a dataloader reset, mode switches), more than a full-batch
        population's whole validation pass."""
        self.stack.eval()
        for x, y in self._val or ():
            logits = self.stack.forward(x)  # (K, B, C)
            self._accumulate("val", member_ce(logits, y), logits, y)

    def _accumulate(self, stage: str, ce: Tensor, logits: Tensor, y: Tensor) -> None:
        if stage == "val":  # the ECE bins every sample's confidence: kept until the epoch ends
            self._val_outputs.append((logits.detach(), y))
        n = y.shape[-1]
        correct = (logits.argmax(-1) == y).sum(-1).to(torch.float64)  # (K,)
        values = torch.stack([ce.to(torch.float64) * n, correct])  # (2, K)
        total = self._sums.get(stage)
        self._sums[stage] = values if total is None else total + values
        self._sums[f"{stage}/n"] = self._sums.get(f"{stage}/n", torch.zeros(())) + n

    def _drop(self, stage: str) -> None:
        self._sums.pop(stage, None)
        self._sums.pop(f"{stage}/n", None)
        if stage == "val":
            self._val_outputs.clear()

    # ---- the end of an epoch ------------------------------------------------------------------

    def on_train_epoch_end(self) -> None:
        epoch = self.trainer.current_epoch
        if self._val is not None:
            self._validate()
            self._log("val")
        self._log("train")
        metrics = self._epoch_metrics()
        self._sums.clear()
        self._val_outputs.clear()
        self.epoch_metrics.update(metrics)
        for i in self.active:
            own = self.max_epochs[i]
            if own is not None and epoch + 1 >= own:
                self.stopped.add(i)  # its own run ends here; longer members go on
        self.members_epoch_end(epoch, metrics)
        assert self.schedules is not None  # made at fit start
        val_loss = [metrics[i].get("val/loss", math.nan) for i in self.active]
        self.schedules.step(torch.tensor(val_loss))  # plateau's
        self._leave()
        if not self.active:
            self.trainer.should_stop = True

    def _stage_metrics(self, stage: str) -> dict[int, dict[str, float]]:
        if stage not in self._sums:
            return {}
        sums, n = self._sums[stage].cpu(), float(self._sums[f"{stage}/n"])
        metrics = {
            i: {f"{stage}/loss": float(sums[0, row]) / n, f"{stage}/acc": float(sums[1, row]) / n}
            for row, i in enumerate(self.active)
        }
        if stage == "val":
            logits = torch.cat([z for z, _ in self._val_outputs], dim=1)  # (K, N, C)
            y = torch.cat([y for _, y in self._val_outputs])  # (N,)
            ece = calibration_errors(logits, y).tolist()  # (K,)
            for row, i in enumerate(self.active):
                metrics[i]["val/ece"] = ece[row]
        return metrics

    def _epoch_metrics(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {i: {} for i in self.active}
        for stage in ("train", "val"):
            for i, values in self._stage_metrics(stage).items():
                out[i].update(values)
        return out

    def _log(self, stage: str) -> None:
        if not self.log_members:
            return
        metrics = self._stage_metrics(stage)
        if not metrics:
            return
        self.log_dict({f"member_{i}/{k}": v for i, m in metrics.items() for k, v in m.items()})
        loss = [m[f"{stage}/loss"] for m in metrics.values()]
        acc = [m[f"{stage}/acc"] for m in metrics.values()]
        best = {f"{stage}/loss": _best(loss, min), f"{stage}/acc": _best(acc, max)}
        self.log_dict(best, prog_bar=stage == "val")

    def _leave(self) -> None:
        """Compact the batch to the members still training."""
        keep = [row for row, i in enumerate(self.active) if i not in self.stopped]
        if len(keep) == len(self.active):
            return
        for row, i in enumerate(self.active):
            if i in self.stopped:
                self._left[i] = self.stack.member_state_dict(row)
        self.active = [self.active[row] for row in keep]
        if keep:
            self.stack.keep(keep)
            self.optim.keep(keep)
            assert self.schedules is not None
            self.schedules.keep(keep)


def member_ce(logits: Tensor, y: Tensor) -> Tensor:
    """Each member's mean cross-entropy over the batch: `(K, B, C), (B,) or (K, B) -> (K,)`."""
    k, b = logits.shape[:2]
    targets = y.flatten() if y.ndim == 2 else y.repeat(k)
    losses = F.cross_entropy(logits.flatten(0, 1), targets, reduction="none")  # (K·B,)
    return losses.view(k, b).mean(dim=1)


def _each(name: str, values: Sequence[T | None] | None, n: int) -> list[T | None]:
    """One value per member: `values` as a list, or None for each."""
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} values for {n} models")
    return list(values)


def _best(values: list[float], pick: Callable[..., float]) -> float:
    """The best of the members' values, NaN (a diverged member) ignored; NaN if all are."""
    finite = [v for v in values if not math.isnan(v)]
    return pick(finite) if finite else math.nan
