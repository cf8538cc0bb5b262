"""The `Classifier` base: everything the zoo's models share except the network itself.

A model file subclasses `Classifier`, declares its network's arguments in its typed `__init__`
and builds the network in `build_network`. The base owns the loss, accuracy, logging, optimizers,
learning-rate schedules, L1/L2 penalties, decoupled weight decay and initialization.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from regzoo._checks import is_int, is_number
from regzoo._normalize import NORMALIZATIONS
from regzoo.zoo._checks import MAX_SIZE, check_flag, check_size, is_sequence, is_size
from regzoo.zoo._hparams import plain_hparam
from regzoo.zoo._layers import INITS, initialize, is_weight
from regzoo.zoo._pipeline import InputPipeline
from regzoo.zoo.metrics import calibration_metric

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "plateau", "piecewise")


class Classifier(L.LightningModule):
    """Cross-entropy classifier with every training knob of the course.

    The training objective on a batch of m samples is

        L = (1/m) Σᵢ CE(f(xᵢ), yᵢ) + l1 · Σ_w |w| + (l2 / 2) · Σ_w w²

    where w runs over the penalized parameters: weight matrices and kernels, plus biases and
    norm parameters only when `decay_bias=True`. With `weight_decay=λ` (decoupled), each
    optimizer step first shrinks the same parameters, θ ← θ − η·λ·θ (η the current learning
    rate), then applies the optimizer's update computed from the gradient of L alone. Under plain
    SGD the two are the same step: θ − η(∇CE + l2·θ) with `l2=λ`. Under Adam they differ, since
    the L2 gradient is rescaled by Adam's second-moment estimate and decoupled decay is not.

    The model takes the dataset's raw inputs: `normalize` is its first step (`zoo._pipeline`),
    with the training split's statistics saved among its buffers, so a checkpoint, a hub folder
    or an exported program predicts from raw inputs as the trained model did.

    Args:
        input_shape: Raw inputs' shape: `(C, H, W)` for images, `(C, L)` for 1-D signals,
            `(D,)` for features.
        num_classes: Number of output classes.
        normalize: `none`, `minmax`, `standard` or `pca` (whitened principal-component scores,
            so the network sees `(D,)`), fitted on the training split when training starts
            (from the datamodule's `input_statistics()`) or by `fit_input(x_train)`.
        class_names: The name of each class, in label order (recorded, for predictions).
        feature_names: The name of each input feature, in input order, for inputs `(D,)` (a
            CSV table's columns: recorded, so that a reused model says what its inputs are).
        input_range: The raw inputs' range `(low, high)` where the dataset defines one
            (pixels in [0, 1]); recorded, not enforced.
        optimizer: `sgd` (θ ← θ − ηg); `momentum` (torch's SGD: v ← ρv + g, θ ← θ − ηv,
            the lecture's Δθₜ = ρΔθₜ₋₁ − ηgₜ while η is constant); `nesterov` (the same with
            θ ← θ − η(g + ρv)); `rmsprop` (h ← αh + (1 − α)g², θ ← θ − ηg/(√h + ε), no
            momentum); `adam` (m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²,
            θ ← θ − η·m̂/(√v̂ + ε) with the bias-corrected m̂, v̂); `adamw` (torch's AdamW:
            adam with the decoupled decay above).
        momentum: ρ of `momentum` and `nesterov`.
        alpha: RMSProp's smoothing constant α.
        scheduler: `none`; `step` (×`gamma` every `step_size` epochs); `cosine` (to `min_lr`
            over the trainer's `max_epochs`); `plateau` (×`gamma` after `plateau_patience`
            epochs without a lower `val/loss`); `piecewise` (lr `lr_values[i]` from epoch
            `milestones[i-1]` on, `lr_values[0]` before the first milestone; epochs count
            from 0, and `lr` is not used). The lecture's 0.3 → 0.05 → 0.01 over 1000 epochs
            is `milestones=(500, 900), lr_values=(0.3, 0.05, 0.01)`.
        init: `default` (PyTorch's own), `zeros`, `constant` (`init_value`), `normal`
            (N(0, `init_std`²)), `uniform` (U[−`init_range`, `init_range`]), `xavier`
            (Glorot uniform), `kaiming` (He normal, N(0, gain²/fan_in) with the gain of the
            network's activation: √2 for ReLU-like units, 1 for `abs` and `identity`, 5/3 for
            `tanh` and the rnn cells). Biases start at 0 except with `default`.
        grad_clip: Clip the gradients' global L2 norm to this value before each step (0: off).
        temperature: The logits are divided by it: a calibration fitted after training on the
            validation split (`zoo.metrics.fit_temperature`, `regzoo export --calibrate`);
            1 trains and predicts as the network computes. It is an hparam, so every saved
            format (checkpoint, hub folder, pt2, ONNX) carries it.
    """

    model_name: ClassVar[str] = ""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        normalize: str = "none",
        class_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
        input_range: Sequence[float] | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        alpha: float = 0.99,
        weight_decay: float = 0.0,
        l1: float = 0.0,
        l2: float = 0.0,
        decay_bias: bool = False,
        scheduler: str = "none",
        step_size: int = 10,
        gamma: float = 0.1,
        milestones: Sequence[int] = (),
        lr_values: Sequence[float] = (),
        min_lr: float = 0.0,
        plateau_patience: int = 5,
        init: str = "default",
        init_std: float = 0.01,
        init_range: float = 0.05,
        init_value: float = 0.0,
        grad_clip: float = 0.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        raw_shape = _check_shape(input_shape)
        _check_training_args(locals())
        _check_input_args(normalize, class_names, input_range, num_classes)
        _check_feature_names(feature_names, raw_shape)
        # Collects the subclass's arguments too: a checkpoint rebuilds the whole model.
        self.save_hyperparameters(logger=False)
        self.hparams.update({k: plain_hparam(k, v) for k, v in self.hparams.items()})
        self.pipeline = InputPipeline(normalize, raw_shape)
        self.raw_shape = raw_shape
        self.input_shape = self.pipeline.output_shape  # what the network sees
        self.net = self.build_network()
        initialize(
            self.net,
            init,
            std=init_std,
            bound=init_range,
            value=init_value,
            gain_of=self.init_gain_of(),
        )
        self.example_input_array = torch.zeros(2, *self.raw_shape)
        # Updated at each step and logged once per epoch: a per-step `self.log` and a metric's
        # forward (which also computes the batch's own value) cost more than the whole step of
        # a small model (benchmarks/overhead.py). NaN losses pass through for early stopping.
        self.train_loss, self.val_loss, self.test_loss = (
            MeanMetric(nan_strategy="disable") for _ in range(3)
        )
        self.train_acc, self.val_acc, self.test_acc = (
            MulticlassAccuracy(num_classes=num_classes, average="micro") for _ in range(3)
        )
        # Held-out data only: the training batches' confidence is taken with dropout on.
        self.val_ece, self.test_ece = (calibration_metric(num_classes) for _ in range(2))
        self._updated: set[str] = set()  # stages whose metrics saw a batch this epoch

    @property
    def hp(self) -> Any:
        """`self.hparams` with attribute access (`self.hp.lr`), typed loosely for mypy."""
        return self.hparams

    def build_network(self) -> nn.Module:
        """The network mapping a batch of inputs to class logits; read arguments from hparams."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_network()")

    def init_gain_of(self) -> str:
        """The activation whose gain `init="kaiming"` uses: the network's `activation` hparam."""
        return str(self.hp.get("activation", "relu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of raw inputs: `(B, *raw_shape) -> (B, num_classes)`."""
        logits = self.net(self.pipeline(x))  # (B, *raw_shape) -> (B, *input_shape) -> logits
        temperature = self.hp.get("temperature", 1.0)
        return logits if temperature == 1.0 else logits / temperature

    # ---- the input pipeline ----------------------------------------------------------------

    def fit_input(self, x_train: torch.Tensor | Any) -> Classifier:
        """Fit `normalize` on raw training inputs `(N, *raw_shape)`, without a datamodule."""
        self.pipeline.fit(x_train)
        return self

    def setup(self, stage: str) -> None:
        """Take the normalization statistics of the datamodule the Trainer was given.

        A regzoo datamodule offers them as `input_statistics()`: `(normalize, statistics)` of
        its training split. Any other data leaves them as they are, which must then be fitted
        (`fit_input`) or loaded (a checkpoint) unless `normalize="none"`.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        offered = getattr(datamodule, "input_statistics", None)
        if callable(offered):
            kind, stats = offered()
            if kind != self.hp.normalize:
                raise ValueError(
                    f"the datamodule normalizes with {kind!r}, the model with "
                    f"{self.hp.normalize!r}: create the model with normalize=dm.normalize"
                )
            if stage == "fit" or not self.pipeline.is_fitted:
                self.pipeline.load_statistics(stats)
        if stage == "fit" and not self.pipeline.is_fitted:
            raise ValueError(
                f"normalize={self.hp.normalize!r} has no statistics: train with a regzoo "
                "datamodule, or call model.fit_input(x_train) first"
            )

    # ---- penalties -------------------------------------------------------------------------

    def penalized_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters under L1/L2 and weight decay: weights, plus the rest if `decay_bias`."""
        for p in self.net.parameters():
            if p.requires_grad and (self.hp.decay_bias or is_weight(p)):
                yield p

    def penalty(self) -> torch.Tensor:
        """l1 · Σ|w| + (l2 / 2) · Σw² over `penalized_parameters()`."""
        l1, l2 = self.hp.l1, self.hp.l2
        total = torch.zeros((), device=self.device)
        if l1 == 0 and l2 == 0:
            return total
        for p in self.penalized_parameters():
            if l1:
                total = total + l1 * p.abs().sum()
            if l2:
                total = total + 0.5 * l2 * p.pow(2).sum()
        return total

    # ---- steps -----------------------------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        x, y = batch
        logits = self(x)  # (B, num_classes)
        loss = F.cross_entropy(logits, y)
        # One entry per sample weights the mean by batch size: torchmetrics 1.9 replaces
        # `weight` by ones under nan_strategy="disable".
        self.train_loss.update(loss.detach().expand(len(y)))  # () -> (B,)
        self._updated.add("train")
        self.train_acc.update(logits.detach(), y)
        if self.hp.l1 or self.hp.l2:
            penalty = self.penalty()
            self.log("train/penalty", penalty, on_step=False, on_epoch=True, batch_size=len(y))
            loss = loss + penalty
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_acc, self.val_ece)
        self._updated.add("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc, self.test_ece)
        self._updated.add("test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).softmax(dim=-1)

    def _evaluate(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        loss: MeanMetric,
        acc: MulticlassAccuracy,
        ece: MulticlassCalibrationError,
    ) -> None:
        x, y = batch
        logits = self(x)  # (B, num_classes)
        loss.update(F.cross_entropy(logits, y).expand(len(y)))  # () -> (B,), as in training_step
        acc.update(logits, y)
        # Probabilities, not logits: torchmetrics takes scores inside [0, 1] as probabilities.
        ece.update(logits.float().softmax(dim=-1), y)

    # Epoch-level metrics, logged from the module's epoch-end hooks, so that callbacks see them
    # from `on_validation_end` / the monitoring callbacks' `on_train_epoch_end` on. `compute`
    # averages over every rank under DDP.

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", self.train_loss, self.train_acc)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_acc, self.val_ece, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_loss, self.test_acc, self.test_ece)

    def _log_epoch(
        self,
        stage: str,
        loss: MeanMetric,
        acc: MulticlassAccuracy,
        ece: MulticlassCalibrationError | None = None,
        *,
        prog_bar: bool = False,
    ) -> None:
        if stage not in self._updated:  # an epoch without batches (e.g. limit_val_batches=0)
            return
        self._updated.discard(stage)
        self.log(f"{stage}/loss", loss.compute(), prog_bar=prog_bar)
        self.log(f"{stage}/acc", acc.compute(), prog_bar=prog_bar)
        loss.reset()
        acc.reset()
        if ece is not None:
            self.log(f"{stage}/ece", ece.compute())
            ece.reset()

    # ---- optimization ----------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        hp = self.hp
        penalized = {id(p) for p in self.penalized_parameters()}
        decay = [p for p in self.parameters() if p.requires_grad and id(p) in penalized]
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in penalized]
        groups = [
            {"params": decay, "decoupled_decay": hp.weight_decay},
            {"params": rest, "decoupled_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        optimizer = make_optimizer(groups, hp)
        scheduler = self._make_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if hp.scheduler == "plateau":
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        return make_scheduler(optimizer, self.hp, max_epochs=max_epochs)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # After backward, before the update: decay the weights the gradient was taken at.
        if self.hp.weight_decay and self.hp.optimizer != "adamw":
            apply_decoupled_decay(optimizer)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        clip = self.hp.grad_clip or gradient_clip_val
        if clip:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=clip,
                gradient_clip_algorithm=gradient_clip_algorithm or "norm",
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["regzoo_model"] = self.model_name
        checkpoint["regzoo_input"] = self.input_description()

    def input_description(self) -> dict[str, Any]:
        """What the model's raw inputs are: shape, dtype, range, normalization, class names,
        feature names (recorded in checkpoints and in a saved folder's `config.json`)."""
        hp = self.hparams
        return {
            "shape": list(self.raw_shape),
            "dtype": "float32",
            "range": list(hp["input_range"]) if hp.get("input_range") else None,
            "normalize": hp.get("normalize", "none"),
            "class_names": list(hp["class_names"]) if hp.get("class_names") else None,
            "feature_names": list(hp["feature_names"]) if hp.get("feature_names") else None,
        }


@torch.no_grad()
def apply_decoupled_decay(optimizer: torch.optim.Optimizer) -> None:
    """θ ← θ − η·λ·θ for every group with a `decoupled_decay` λ, η its current learning rate."""
    for group in optimizer.param_groups:
        factor = group["lr"] * group.get("decoupled_decay", 0.0)
        if factor:
            for p in group["params"]:
                p.mul_(1.0 - factor)


def make_optimizer(groups: list[dict[str, Any]], hp: Any) -> torch.optim.Optimizer:
    """The torch optimizer of `hp.optimizer` over parameter groups with a `decoupled_decay`."""
    optim = torch.optim
    if hp.optimizer == "sgd":
        return optim.SGD(groups, lr=hp.lr)
    if hp.optimizer in ("momentum", "nesterov"):
        return optim.SGD(
            groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.optimizer == "nesterov"
        )
    if hp.optimizer == "rmsprop":
        return optim.RMSprop(groups, lr=hp.lr, alpha=hp.alpha, eps=hp.eps)
    if hp.optimizer == "adam":
        return optim.Adam(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
    for g in groups:  # adamw: torch's own decoupled decay, the same formula as ours
        g["weight_decay"] = g["decoupled_decay"]
    return optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)


def make_scheduler(
    optimizer: torch.optim.Optimizer, hp: Any, *, max_epochs: int | None
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The torch scheduler of `hp.scheduler` (None for `none`), stepped once per epoch.

    `max_epochs` is the cosine schedule's period; the other schedules ignore it.
    """
    sched = torch.optim.lr_scheduler
    if hp.scheduler == "step":
        return sched.StepLR(optimizer, step_size=hp.step_size, gamma=hp.gamma)
    if hp.scheduler == "cosine":
        if not max_epochs or max_epochs < 0:
            raise ValueError("scheduler='cosine' needs a Trainer with a finite max_epochs")
        return sched.CosineAnnealingLR(optimizer, T_max=max_epochs, eta_min=hp.min_lr)
    if hp.scheduler == "plateau":
        return sched.ReduceLROnPlateau(
            optimizer, factor=hp.gamma, patience=hp.plateau_patience, min_lr=hp.min_lr
        )
    if hp.scheduler == "piecewise":
        milestones, values, base = list(hp.milestones), list(hp.lr_values), hp.lr
        return sched.LambdaLR(
            optimizer, lambda epoch: values[bisect.bisect_right(milestones, epoch)] / base
        )
    return None


def _check_feature_names(feature_names: Any, raw_shape: tuple[int, ...]) -> None:
    if feature_names is None:
        return
    if (
        len(raw_shape) != 1
        or not is_sequence(feature_names)
        or len(feature_names) != raw_shape[0]
        or not all(isinstance(f, str) for f in feature_names)
    ):
        allowed = f"{raw_shape[0]} strings" if len(raw_shape) == 1 else "only for inputs (D,)"
        raise ValueError(
            f"feature_names={feature_names!r} is invalid for inputs {raw_shape}; allowed: None "
            f"or {allowed}"
        )


def _check_input_args(normalize: Any, class_names: Any, input_range: Any, num_classes: int) -> None:
    if not isinstance(normalize, str) or normalize not in NORMALIZATIONS:
        raise ValueError(
            f"normalize={normalize!r} is invalid; allowed: {', '.join(NORMALIZATIONS)}"
        )
    if class_names is not None and (
        not is_sequence(class_names)
        or len(class_names) != num_classes
        or not all(isinstance(c, str) for c in class_names)
    ):
        raise ValueError(
            f"class_names={class_names!r} is invalid; allowed: None or {num_classes} strings"
        )
    if input_range is not None and (
        not is_sequence(input_range)
        or len(input_range) != 2
        or not all(is_number(v) for v in input_range)
        or not input_range[0] < input_range[1]
    ):
        raise ValueError(
            f"input_range={input_range!r} is invalid; allowed: None or (low, high), low < high"
        )


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if not 1 <= len(shape) <= 3 or not all(is_size(d) for d in shape):
        raise ValueError(
            f"input_shape={input_shape!r} is invalid; expected (D,), (C, L) or (C, H, W) "
            f"with integers in [1, {MAX_SIZE}]"
        )
    return shape


def _check_training_args(args: dict[str, Any]) -> None:
    """One clear ValueError naming the first bad training argument."""

    def bad(name: str, allowed: str) -> ValueError:
        return ValueError(f"{name}={args[name]!r} is invalid; allowed: {allowed}")

    check_size("num_classes", args["num_classes"], low=2)
    check_flag("decay_bias", args["decay_bias"])
    if args["optimizer"] not in OPTIMIZERS:
        raise bad("optimizer", ", ".join(OPTIMIZERS))
    if args["scheduler"] not in SCHEDULERS:
        raise bad("scheduler", ", ".join(SCHEDULERS))
    if args["init"] not in INITS:
        raise bad("init", ", ".join(INITS))
    positive = ("lr", "eps", "alpha", "init_std", "init_range", "gamma", "temperature")
    for name in positive:
        if not is_number(args[name]) or args[name] <= 0:
            raise bad(name, "a finite number > 0")
    for name in ("weight_decay", "l1", "l2", "min_lr", "grad_clip", "momentum"):
        if not is_number(args[name]) or args[name] < 0:
            raise bad(name, "a finite number >= 0")
    if not is_number(args["init_value"]):
        raise bad("init_value", "a finite number")
    if not 0 <= args["momentum"] < 1 or not 0 < args["alpha"] < 1:
        raise bad("momentum" if not 0 <= args["momentum"] < 1 else "alpha", "a number in [0, 1)")
    betas = args["betas"]
    if (
        not is_sequence(betas)
        or len(betas) != 2
        or not all(is_number(b) and 0 <= b < 1 for b in betas)
    ):
        raise bad("betas", "two numbers in [0, 1)")
    for name in ("step_size", "plateau_patience"):
        if not is_int(args[name], low=1 if name == "step_size" else 0):
            raise bad(name, "a positive integer" if name == "step_size" else "an integer >= 0")
    if args["scheduler"] == "piecewise":
        ms, vals = args["milestones"], args["lr_values"]
        ints = is_sequence(ms) and all(is_int(m, low=1) for m in ms)
        if not ints or not ms or list(ms) != sorted(set(ms)):
            raise bad("milestones", "increasing positive epochs, at least one, for 'piecewise'")
        if (
            not is_sequence(vals)
            or len(vals) != len(ms) + 1
            or not all(is_number(v) and v > 0 for v in vals)
        ):
            raise bad("lr_values", f"{len(ms) + 1} positive learning rates (one per segment)")
