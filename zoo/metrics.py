"""How much a classifier overfits and how well its confidence is calibrated, as regzoo
measures both: the expected calibration error (ECE) and a split evaluated like validation.

    ece = calibration_error(logits, y)                       # torchmetrics, 15 bins, L1
    metrics = evaluate(model, dm.train_eval_dataloader(), "train_eval")

The ECE is torchmetrics' `MulticlassCalibrationError` (top-label, `ECE_BINS` equal-width bins
of the softmax confidence, L1 norm): the samples' share-weighted mean over the bins of
|accuracy − mean confidence|. 0 is perfectly calibrated; an overconfident model's ECE grows
with the confidence its accuracy does not earn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassCalibrationError
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15  # the bins of Guo et al. (2017) and of torchmetrics' default


def calibration_metric(num_classes: int) -> MulticlassCalibrationError:
    """The ECE as a torchmetrics metric, updated with probabilities (`logits.softmax(-1)`)."""
    return MulticlassCalibrationError(num_classes=num_classes, n_bins=ECE_BINS, norm="l1")


def calibration_error(logits: Tensor, y: Tensor) -> float:
    """The ECE of class logits `(N, C)` for labels `(N,)`.

    The logits are turned into probabilities here: torchmetrics applies a softmax only to
    scores outside [0, 1], so a model whose logits all happen to lie in [0, 1] would be read as
    giving probabilities.
    """
    probs = logits.float().softmax(dim=-1)  # (N, C)
    value = multiclass_calibration_error(
        probs, y, num_classes=probs.shape[-1], n_bins=ECE_BINS, norm="l1", validate_args=False
    )
    return float(value)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Any], prefix: str) -> dict[str, float]:
    """`<prefix>/loss`, `<prefix>/acc` and `<prefix>/ece` of `model` over `batches` of
    `(x, y)`, in eval mode (dropout off, batch norm's running statistics), as validation is
    computed: the loss is the mean cross-entropy over samples. The model's mode is restored.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    logits, labels = [], []
    try:
        for x, y in batches:
            x = x.to(param.device, param.dtype if x.is_floating_point() else None)
            logits.append(model(x).float())  # (B, num_classes)
            labels.append(y.to(param.device))
    finally:
        model.train(was_training)
    if not labels:
        raise ValueError(f"{prefix}: no batches to evaluate")
    z, y = torch.cat(logits), torch.cat(labels)  # (N, C), (N,)
    return {
        f"{prefix}/loss": float(F.cross_entropy(z, y)),
        f"{prefix}/acc": float((z.argmax(-1) == y).float().mean()),
        f"{prefix}/ece": calibration_error(z, y),
    }
