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
    MemberDropout     per-member rate, drawn only for the members that drop (`Draws`)
    InputPipeline     per-member statistics
    activations, Flatten, Identity, Sequential

A network with any other module (or a setting outside what is reproduced here) gets `None`
from `BatchedForward.build`, and `StackedModels` keeps vmap for it, decided once.

Activations flow between ops in one of three layouts (`Flow`): `shared` (B, *f), the same input
for every member, before any member's tensor is read; `member` (K, B, *f); `batch` (B, K, *f),
which a conv, pool or batchnorm views as (B, K·C, *S) without a copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

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
        draws = Draws()  # the dropout layers' uniform numbers
        steps = _steps(pipeline, "pipeline.", buffers, draws)
        rest = _steps(net, "net.", buffers, draws)
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


def _steps(module: nn.Module, prefix: str, buffers: Tensors, draws: Draws) -> list[Step] | None:
    """The batched ops of `module` (its state-dict names under `prefix`), in forward order."""
    kind = type(module)
    if kind is nn.Sequential:
        steps: list[Step] = []
        for name, child in module.named_children():
            inner = _steps(child, f"{prefix}{name}.", buffers, draws)
            if inner is None:
                return None
            steps += inner
        return steps
    if kind in ELEMENTWISE:
        return [_elementwise(module)]
    if kind is MemberDropout:
        if not bool(buffers[f"{prefix}p"].any()):
            return []  # rate 0 for all: the identity, with no draw
        return [_member_dropout(module, prefix, draws)]
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


class _StackedLinear(torch.autograd.Function):
    """y = x·Wₖᵀ + bₖ for each member k: `(K, N, D), (K, O, D), (K, O) or None -> (K, N, O)`.

    Autograd's own backward of `baddbmm(b, x, Wᵀ)` returns the weights' gradient as the
    transpose of a `(K, D, O)` product, a strided tensor that every later elementwise pass (the
    penalty, clipping, the optimizer) reads at a fraction of its contiguous speed: this backward
    computes `∂W = ∂yᵀ·x` as a contiguous `(K, O, D)` product instead, the layout of the
    weights (a step of 20 [256, 256] MLPs with L2, dropout and Adam: 6% faster)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, w)
        wt = w.transpose(1, 2)  # (K, D, O)
        return torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)

    @staticmethod
    def backward(
        ctx: FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, w = ctx.saved_tensors  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        gx = torch.bmm(grad, w) if needs[0] else None  # (K, N, O)·(K, O, D)
        gw = torch.bmm(grad.transpose(1, 2), x) if needs[1] else None  # (K, O, N)·(K, N, D)
        gb = grad.sum(1) if needs[2] else None
        return gx, gw, gb


def _linear(module: nn.Module, prefix: str) -> Step:
    """y = x·Wₖᵀ + bₖ as one batched GEMM over contiguous (K, B, D) inputs (an expanded shared
    input as it is). Then a member's rounding does not change with K or with the other members
    (`StackedModels.keep` keeps results bitwise); on this CPU's BLAS a transposed view, or one
    wide GEMM over all K·O outputs, changed it with K. Its backward is `_StackedLinear`'s."""
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
        y = _StackedLinear.apply(x3, w, b)
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


class Draws:
    """The uniform numbers of a population's dropout masks, from `STREAMS` generators, each
    filling its share of the members' rows; on a CPU with more than one torch thread the
    streams are drawn at once, one on a helper thread, since torch's CPU `uniform_` runs on one
    core (two streams of 25 members' [128, 256] activations: 1.35 ms for the 2.35 ms of one).
    Each fill seeds the streams from torch's global generator, so the masks follow it as a
    single draw would: `torch.manual_seed` repeats them, whatever the thread count, and a
    layer that draws nothing leaves it as it was."""

    STREAMS = 2

    def __init__(self) -> None:
        self._generators: list[torch.Generator] = []

    def fill(self, rows: list[Tensor]) -> None:
        """Fill `rows` (views of whole members' rows, in row order) with U[0, 1) numbers."""
        device = rows[0].device
        if not self._generators or self._generators[0].device != device:
            self._generators = [torch.Generator(device=device) for _ in range(self.STREAMS)]
        for generator, seed in zip(
            self._generators, torch.randint(0, 2**62, (self.STREAMS,)).tolist(), strict=True
        ):
            generator.manual_seed(int(seed))
        shares = _split(rows, self.STREAMS)
        helper = _helper() if device.type == "cpu" and torch.get_num_threads() > 1 else None
        pending = []
        for share, generator in zip(shares[1:], self._generators[1:], strict=True):
            if helper is not None:
                pending.append(helper.submit(_uniform, share, generator))
            else:
                _uniform(share, generator)
        _uniform(shares[0], self._generators[0])
        for done in pending:
            done.result()


_HELPERS: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked child makes its own


def _helper() -> ThreadPoolExecutor:
    """The process's helper thread, made at first use (a fork copies no threads)."""
    pid = os.getpid()
    if pid not in _HELPERS:
        _HELPERS[pid] = ThreadPoolExecutor(1, thread_name_prefix="regzoo-draws")
    return _HELPERS[pid]


def _uniform(rows: list[Tensor], generator: torch.Generator) -> None:
    for row in rows:
        row.uniform_(generator=generator)


def _split(rows: list[Tensor], parts: int) -> list[list[Tensor]]:
    """`rows` (each `(k, ...)`) cut at member rows into `parts` shares of about equal size,
    in row order (a share may be empty)."""
    total = sum(r.shape[0] for r in rows)
    ends = [round(total * (i + 1) / parts) for i in range(parts)]  # each share's last row + 1
    shares: list[list[Tensor]] = [[] for _ in range(parts)]
    offset = 0  # the global row of rows[i][0]
    for r in rows:
        start = 0
        while start < r.shape[0]:
            part = next(i for i, end in enumerate(ends) if end > offset + start)
            take = min(r.shape[0] - start, ends[part] - offset - start)
            shares[part].append(r[start : start + take])
            start += take
        offset += r.shape[0]
    return shares


def _member_dropout(module: nn.Module, prefix: str, draws: Draws) -> Step:
    """`MemberDropout` with member k's rate: `x · [u ≥ pₖ] / (1 − pₖ)` (`MemberDropout.noise`).

    The uniform numbers u are drawn only for members whose rate is above 0 (`Draws`), into one
    `(K, B, *f)` noise tensor (a member at 0 is multiplied by 1 exactly): an ablation's members
    without dropout cost no draws, the largest cost of a dropout layer. Which rows draw is read
    on the host once per rates tensor (a new one after `keep` or `to`), not per step.
    """
    rate = f"{prefix}p"
    read: Tensor | None = None  # the rates tensor `runs` was read from
    runs: list[tuple[int, int, bool]] = []  # its runs of rows: (start, stop, draws)

    def row_runs(p: Tensor) -> list[tuple[int, int, bool]]:
        nonlocal read, runs
        if p is not read:
            runs = []
            for row, drop in enumerate(v > 0 for v in p.tolist()):
                if runs and runs[-1][2] == drop:
                    runs[-1] = (runs[-1][0], row + 1, drop)
                else:
                    runs.append((row, row + 1, drop))
            read = p
        return runs

    def step(flow: Flow, params: Tensors, buffers: Tensors) -> Flow:
        if not module.training:
            return flow
        x = flow.member()  # (K, B, *f)
        rates = buffers[rate]
        p = rates.view(flow.k, *([1] * (x.ndim - 1)))  # (K,) -> (K, 1, ...)
        found = row_runs(rates)
        if not any(drop for _, _, drop in found):  # the dropping members have left
            return flow
        noise = torch.empty_like(x, memory_format=torch.contiguous_format)
        draws.fill([noise[start:stop] for start, stop, drop in found if drop])
        for start, stop, drop in found:
            if drop:
                MemberDropout.scale(noise[start:stop], p[start:stop])
            else:
                noise[start:stop].fill_(1.0)
        return Flow(x * noise, "member", flow.k)

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
}
