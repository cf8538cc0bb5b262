"""K members' forward pass as batched torch ops, without `torch.func.vmap`.

`vmap(functional_call)` runs any network, but its batching rules are slow for the zoo's small
networks on a CPU: its conv is several times slower than one grouped conv over the K members,
and NCHW `max_pool2d` on 8×8 maps costs ten times what the same call costs channels-last. The
zoo's networks are made of a handful of module types, so `BatchedForward` walks the functional
base network once, at construction, and turns each module into one batched op on the stacked
tensors (names as in the base's `named_parameters()`/`named_buffers()`, shapes `(K, ...)`):

    Linear            baddbmm of (K, B, D) with (K, D, O) (a shared input expanded, not copied)
    Conv1d/2d         one grouped conv on (B, K·C, *S), groups = K (shared input: groups 1)
    MaxPool1d/2d      on (B, K·C, *S); channels-last on a CPU
    BatchNorm1d/2d    on (B, K·C, *S), running statistics updated in place in the stacks
    MemberDropout     per-member rate, the masks vmap would draw
    InputPipeline     per-member statistics
    activations, Flatten, Identity, Sequential

A network with any other module (or a setting outside what is reproduced here) gets `None`
from `BatchedForward.build`, and `StackedModels` keeps vmap for it, decided once.

Activations flow between ops in one of three layouts (`Flow`): `shared` (B, *f), the same input
for every member, before any member's tensor is read; `member` (K, B, *f); `batch` (B, K, *f),
which a conv, pool or batchnorm views as (B, K·C, *S) without a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regzoo.zoo._layers import Abs
from regzoo.zoo._pipeline import InputPipeline
from regzoo.zoo.population.dropout import MemberDropout

Layout = Literal["shared", "member", "batch"]
Tensors = Mapping[str, Tensor]

# Modules applied elementwise, so to any layout as they are (the zoo's activations and more).
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
    Abs,
    nn.Identity,
)


@dataclass(frozen=True)
class Flow:
    """The K members' activations as one tensor, in one of three layouts (module docstring)."""

    x: Tensor
    layout: Layout
    k: int

    def member(self) -> Tensor:
        """(K, B, *f): a view where possible (an expanded shared input, a transposed batch)."""
        if self.layout == "member":
            return self.x
        if self.layout == "batch":
            return self.x.transpose(0, 1)
        return self.x.unsqueeze(0).expand(self.k, *self.x.shape)

    def batch(self) -> Tensor:
        """(B, K, *f), likewise."""
        if self.layout == "batch":
            return self.x
        if self.layout == "member":
            return self.x.transpose(0, 1)
        return self.x.unsqueeze(1).expand(self.x.shape[0], self.k, *self.x.shape[1:])

    def grouped(self) -> Tensor:
        """(B, K·C, *S): channels of member k at k·C ... k·C + C - 1, what grouped ops take."""
        return self.batch().flatten(1, 2)


# One module as a batched op: (flow, stacked params, stacked buffers) -> flow.
Step = Callable[[Flow, Tensors, Tensors], Flow]


class BatchedForward:
    """The members' forward pass, `net(pipeline(x))`, as batched ops on stacked tensors.

    Built by `build`, which returns `None` for a network it cannot reproduce. Modules' training
    flags and settings are read from the base network at call time, so `train()`/`eval()` on it
    take effect as they do under vmap.
    """

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    @classmethod
    def build(cls, pipeline: nn.Module, net: nn.Module, buffers: Tensors) -> BatchedForward | None:
        """The batched forward of `_Network(pipeline, net)` (the state-dict prefixes
        `pipeline.` and `net.`), or `None` when some module has no batched op here.

        `buffers` are the stacked buffers: a `MemberDropout` whose rate is 0 for every member
        is left out, so that it draws no random numbers, as a model's own `nn.Dropout(p=0)`.
        """
        steps = _steps(pipeline, "pipeline.", buffers)
        rest = _steps(net, "net.", buffers)
        if steps is None or rest is None:
            return None
        return cls(steps + rest)

    def __call__(
        self, params: Tensors, buffers: Tensors, x: Tensor, *, per_member: bool = False
    ) -> Tensor:
        """`(B, *raw)` shared, or `(K, B, *raw)` with `per_member`, -> `(K, B, num_classes)`."""
        k = next(iter(params.values())).shape[0]
        flow = Flow(x, "member" if per_member else "shared", k)
        for step in self.steps:
            flow = step(flow, params, buffers)
        return flow.member().contiguous()


def _steps(module: nn.Module, prefix: str, buffers: Tensors) -> list[Step] | None:
    """The batched ops of `module` (its state-dict names under `prefix`), in forward order."""
    kind = type(module)
    if kind is nn.Sequential:
        steps: list[Step] = []
        for name, child in module.named_children():
            inner = _steps(child, f"{prefix}{name}.", buffers)
            if inner is None:
                return None
            steps += inner
        return steps
    if kind in ELEMENTWISE:
        return [_elementwise(module)]
    if kind is MemberDropout and not bool(buffers[f"{prefix}p"].any()):
        return []  # rate 0 for all: the identity, with no draw
    builder = _BUILDERS.get(kind)
    if builder is None:
        return None
    step = builder(module, prefix)
    return None if step is None else [step]


def _elementwise(module: nn.Module) -> Step:
    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        return Flow(module(flow.x), flow.layout, flow.k)

    return step


def _flatten(module: nn.Module, prefix: str) -> Step | None:
    """nn.Flatten of (B, *f) to (B, F): each member's features in its own (C-major) order."""
    assert isinstance(module, nn.Flatten)
    if module.start_dim != 1 or module.end_dim != -1:
        return None

    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        start = 1 if flow.layout == "shared" else 2
        return Flow(flow.x.flatten(start), flow.layout, flow.k)

    return step


def _linear(module: nn.Module, prefix: str) -> Step:
    """y = x·Wₖᵀ + bₖ as one batched GEMM over contiguous (K, B, D) inputs (an expanded shared
    input as it is). Then a member's rounding does not change with K or with the other members
    (`StackedModels.keep` keeps results bitwise); on this CPU's BLAS a transposed view, or one
    wide GEMM over all K·O outputs, changed it with K."""
    assert isinstance(module, nn.Linear)
    weight, bias = f"{prefix}weight", f"{prefix}bias" if module.bias is not None else None

    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        w = params[weight]  # (K, O, D)
        b = None if bias is None else params[bias]  # (K, O)
        k, out = w.shape[:2]
        x = flow.member()  # (K, B, *m, D)
        if flow.layout != "shared":
            x = x.contiguous()
        x3 = x.reshape(k, -1, x.shape[-1])  # (K, B·Πm, D)
        wt = w.transpose(1, 2)  # (K, D, O)
        y = torch.bmm(x3, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x3, wt)
        return Flow(y.view(*x.shape[:-1], out), "member", k)

    return step


def _channels_last(x: Tensor) -> Tensor:
    """2-D maps channels-last on a CPU, where its conv and max-pool kernels are the fast ones
    (max_pool2d on (175, 16, 8, 8): 1.2 ms NCHW, 0.12 ms channels-last), and every op of a
    block in one layout (a mixed one sends the elementwise backward down a strided path).

    One channel is contiguous in both layouts, and torch then treats it as NCHW (so does the
    conv, whose output would be NCHW): a view with channels-last strides says which is meant.
    """
    if x.device.type != "cpu" or x.ndim != 4:
        return x
    if x.shape[1] == 1 and x.is_contiguous():
        b, _, h, w = x.shape
        return x.reshape(b, h, w, 1).permute(0, 3, 1, 2)  # same memory, strides (HW, 1, W, 1)
    return x.contiguous(memory_format=torch.channels_last)


def _conv(module: nn.Module, prefix: str) -> Step | None:
    """Member k's kernels are output channels k·Cout ... of one conv with groups K·g (with a
    shared input and g = 1: groups 1, every member's kernels on the same channels)."""
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    if module.padding_mode != "zeros":
        return None
    conv = F.conv2d if isinstance(module, nn.Conv2d) else F.conv1d
    weight, bias = f"{prefix}weight", f"{prefix}bias" if module.bias is not None else None
    groups = module.groups

    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        w = params[weight]  # (K, Cout, Cin / g, *kernel)
        k, out = w.shape[:2]
        b = None if bias is None else params[bias].flatten()  # (K·Cout,)
        if flow.layout == "shared" and groups == 1:
            x, g = flow.x, 1  # (B, Cin, *S)
        else:
            x, g = flow.grouped(), k * groups  # (B, K·Cin, *S)
        y = conv(
            _channels_last(x), w.flatten(0, 1), b, module.stride, module.padding, module.dilation, g
        )
        return Flow(y.unflatten(1, (k, out)), "batch", k)  # (B, K·Cout, *S') -> (B, K, Cout, *S')

    return step


def _max_pool(module: nn.Module, prefix: str) -> Step | None:
    assert isinstance(module, (nn.MaxPool1d, nn.MaxPool2d))
    if module.return_indices:
        return None
    pool = F.max_pool2d if isinstance(module, nn.MaxPool2d) else F.max_pool1d

    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        x = _channels_last(flow.grouped())  # (B, K·C, *S)
        y = pool(
            x, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode
        )
        return Flow(y.unflatten(1, (flow.k, -1)), "batch", flow.k)

    return step


def _batch_norm(module: nn.Module, prefix: str) -> Step | None:
    """nn.BatchNorm's forward on (B, K·C, *S): channel k·C + c is member k's channel c, so the
    batch statistics and the in-place running-statistics update are each member's own (through
    flat views of the stacked (K, C) buffers). `momentum=None` (a cumulative average with factor
    1 / num_batches_tracked, a tensor per member) is not reproduced: vmap keeps it."""
    assert isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))
    if module.momentum is None:
        return None
    names = {n: f"{prefix}{n}" for n in ("weight", "bias")} if module.affine else {}
    tracked = {n: f"{prefix}{n}" for n in ("running_mean", "running_var", "num_batches_tracked")}
    momentum, eps = module.momentum, module.eps

    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        x = flow.grouped()  # (B, K·C, *S)
        stats = module.track_running_stats
        mean = buffers[tracked["running_mean"]].view(-1) if stats else None  # (K·C,) views
        var = buffers[tracked["running_var"]].view(-1) if stats else None
        if module.training and stats:
            buffers[tracked["num_batches_tracked"]].add_(1)
        weight = params[names["weight"]].flatten() if names else None
        bias = params[names["bias"]].flatten() if names else None
        use_batch = module.training or not stats
        y = F.batch_norm(x, mean, var, weight, bias, use_batch, momentum, eps)
        return Flow(y.unflatten(1, (flow.k, -1)), "batch", flow.k)

    return step


def _pipeline(module: nn.Module, prefix: str) -> Step | None:
    """`InputPipeline.forward` with each member's statistics."""
    assert isinstance(module, InputPipeline)
    kind = module.kind
    if kind == "none":
        return lambda flow, params, buffers: flow
    if kind in ("minmax", "standard"):
        shift, scale = f"{prefix}shift", f"{prefix}scale"

        def affine(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
            s, c = buffers[shift], buffers[scale]  # (K, *stat_shape)
            if flow.layout == "shared":  # (B, 1, *raw) against (K, *stat) -> (B, K, *raw)
                return Flow((flow.x.unsqueeze(1) - s) / c, "batch", flow.k)
            x = flow.member()  # (K, B, *raw)
            return Flow((x - s.unsqueeze(1)) / c.unsqueeze(1), "member", flow.k)

        return affine
    if kind == "pca":
        mean, components, std = (f"{prefix}{n}" for n in ("mean", "components", "std"))

        def pca(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
            x = flow.x.flatten(1) if flow.layout == "shared" else flow.member().flatten(2)
            centred = x - buffers[mean].unsqueeze(1)  # (K, B, D)
            scores = torch.bmm(centred, buffers[components].transpose(1, 2))  # (K, B, D)
            return Flow(scores / buffers[std].unsqueeze(1), "member", flow.k)

        return pca
    return None


def _member_dropout(module: nn.Module, prefix: str) -> Step:
    """`MemberDropout` with member k's rate: x·[u ≥ pₖ]/(1 − pₖ), u drawn as one (K, B, *f)
    tensor, the draw `vmap(randomness="different")` makes, so the masks are vmap's."""
    rate = f"{prefix}p"

    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        if not module.training:
            return flow
        x = flow.member()  # (K, B, *f)
        p = buffers[rate].view(flow.k, *([1] * (x.ndim - 1)))  # (K,) -> (K, 1, ...)
        u = torch.rand(x.shape, dtype=x.dtype, device=x.device)
        return Flow(x * (u >= p) / (1 - p), "member", flow.k)

    return step


_BUILDERS: dict[type, Callable[[nn.Module, str], Step | None]] = {
    nn.Flatten: _flatten,
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.MaxPool1d: _max_pool,
    nn.MaxPool2d: _max_pool,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    InputPipeline: _pipeline,
    MemberDropout: _member_dropout,
}
