"""How much a classifier overfits and how well its confidence is calibrated, as regzoo
measures both: the expected calibration error (ECE) and a split evaluated like validation.

    ece = calibration_error(logits, y)                       # torchmetrics, 15 bins, L1
    metrics = evaluate(model, dm.train_eval_dataloader(), "train_eval")
    t = fit_temperature(val_logits, val_y)                   # temperature scaling

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

ECE_BINS = 15  # the bins of Guo et al. (2017) and of torchmetrics' default


def calibration_metric(num_classes: int) -> MulticlassCalibrationError:
    """The ECE as a torchmetrics metric, updated with probabilities (`logits.softmax(-1)`)."""
    return MulticlassCalibrationError(num_classes=num_classes, n_bins=ECE_BINS, norm="l1")


def calibration_error(logits: Tensor, y: Tensor) -> float:
    """The ECE of class logits `(N, C)` for labels `(N,)`, as `calibration_errors` computes it."""
    return float(calibration_errors(logits.unsqueeze(0), y)[0])


def calibration_errors(logits: Tensor, y: Tensor) -> Tensor:
    """The ECE of each of K models' class logits `(K, N, C)` for shared labels `(N,)`: `(K,)`.

    torchmetrics' binning (`MulticlassCalibrationError`: a sample's top-label confidence falls
    into bin `bucketize(conf, linspace(0, 1, ECE_BINS + 1), right=True) - 1`, a confidence of
    exactly 1 into a bin of its own), for all K at once: a population's members are binned in
    one `scatter_add` instead of one torchmetrics call each. The share-weighted mean over the
    bins of |accuracy − mean confidence| is Σ_bins |Σ (correct − confidence)| / N.

    The logits are turned into probabilities here: torchmetrics applies a softmax only to
    scores outside [0, 1], so a model whose logits all happen to lie in [0, 1] would be read as
    giving probabilities.
    """
    k, n = logits.shape[:2]
    confidence, predicted = logits.float().softmax(dim=-1).max(dim=-1)  # (K, N) each
    edges = torch.linspace(0, 1, ECE_BINS + 1, device=logits.device)
    bins = torch.bucketize(confidence, edges, right=True) - 1  # (K, N) in [0, ECE_BINS]
    rows = torch.arange(k, device=logits.device).unsqueeze(1) * (ECE_BINS + 1)  # (K, 1)
    excess = (predicted == y).float() - confidence  # (K, N)
    sums = torch.zeros(k * (ECE_BINS + 1), device=logits.device)
    sums.scatter_add_(0, (bins + rows).flatten(), excess.flatten())
    return sums.view(k, ECE_BINS + 1).abs().sum(dim=1) / n


def fit_temperature(logits: Tensor, y: Tensor) -> float:
    """The one temperature T > 0 that minimizes the cross-entropy of `logits / T` (Guo et al.,
    2017), fitted by LBFGS on log T from T = 1. Dividing by T keeps every prediction (the
    argmax) and only rescales the confidence: T > 1 softens an overconfident model."""
    z = logits.detach().double()  # (N, C)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


@torch.no_grad()
def logits_of(model: nn.Module, batches: Iterable[Any]) -> tuple[Tensor, Tensor]:
    """`model`'s logits `(N, C)` (float32) and the labels `(N,)` over `batches` of `(x, y)`,
    in eval mode (dropout off, batch norm's running statistics); the model's mode is restored."""
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
        raise ValueError("no batches to evaluate")
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Any], prefix: str) -> dict[str, float]:
    """`<prefix>/loss`, `<prefix>/acc` and `<prefix>/ece` of `model` over `batches` of
    `(x, y)`, as validation computes them (`logits_of`): the loss is the mean cross-entropy over
    samples."""
    z, y = logits_of(model, batches)  # (N, C), (N,)
    return {
        f"{prefix}/loss": float(F.cross_entropy(z, y)),
        f"{prefix}/acc": float((z.argmax(-1) == y).float().mean()),
        f"{prefix}/ece": calibration_error(z, y),
    }
