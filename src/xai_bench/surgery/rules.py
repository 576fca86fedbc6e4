"""Autograd rules that rule-based methods put in place of a model's non-linearities.

Each rule is a small module with a custom backward. DeepLIFT rules expect the batch to be
the inputs followed by their references, ``cat([x, x_ref])``, as the DeepLIFT attributor feeds it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import operator
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..core.errors import SurgeryError


class _GuidedReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.clamp(min=0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return grad.clamp(min=0) * (y > 0)


class GuidedReLU(nn.Module):
    """ReLU whose backward passes only positive gradients through positive activations."""

    def forward(self, x: Tensor) -> Tensor:
        """ReLU forward; backward passes only positive gradients through positive inputs."""
        return _GuidedReLUFunction.apply(x)


class _DeconvReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class DeconvReLU(nn.Module):
    """ReLU whose backward passes the positive part of the gradient, whatever the input's sign."""

    def forward(self, x: Tensor) -> Tensor:
        """ReLU forward; backward is the ReLU of the gradient."""
        return _DeconvReLUFunction.apply(x)


# The number of (input, reference) pairs of the pass a DeepLIFT attributor is running, so that every
# rule can check that the first dimension of what it sees is that batch (a sequence-first transformer
# moves it elsewhere, and halving another dimension would give silently wrong maps).
_PAIRS: contextvars.ContextVar[int | None] = contextvars.ContextVar("xai_bench_pairs", default=None)


@contextlib.contextmanager
def pairs_in_pass(pairs: int) -> Iterator[None]:
    """Run the rules of a DeepLIFT forward pass over ``pairs`` inputs followed by their references."""
    token = _PAIRS.set(pairs)
    try:
        yield
    finally:
        _PAIRS.reset(token)


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    n = t.shape[0]
    pairs = _PAIRS.get()
    if pairs is not None and n != 2 * pairs:
        raise SurgeryError(
            f"A DeepLIFT rule saw a tensor of shape {tuple(t.shape)} whose first dimension is not the batch of "
            f"{2 * pairs} (inputs, then their references): the model moves the batch dimension (a sequence-first "
            "transformer, a reshape that folds the batch into another dimension), which the rules cannot follow. "
            "Keep the batch first, or use a gradient method or occlusion."
        )
    if n % 2:
        raise SurgeryError(
            f"A DeepLIFT rule saw a batch of {n}; it expects inputs followed by their references "
            "(an even batch). Call the model through the deeplift attributor."
        )
    return t[: n // 2], t[n // 2 :]


def _rescale_multiplier(dx: Tensor, dy: Tensor, slope: Tensor, eps: float) -> Tensor:
    # Where input and reference agree the finite difference is undefined; the gradient is its limit.
    safe = dx.abs() > eps
    return torch.where(safe, dy / torch.where(safe, dx, torch.ones_like(dx)), slope)


def _identity(t: Tensor) -> Tensor:
    return t


def _derivative(fn: Callable[[Tensor], Tensor], at: Tensor) -> Tensor:
    """f'(at) of an element-wise ``fn``. Its small graph keeps its own saved tensors: hooks an outer
    context set on saved tensors (the memory probe's, which forbid unpacking) do not apply to it."""
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
        probe = at.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(fn(probe), probe, torch.ones_like(probe))
    return slope


def _per_half(grad: Tensor, m: Tensor) -> Tensor:
    """``grad * cat([m, m])`` without building the concatenation."""
    return (grad.unflatten(0, (2, -1)) * m).flatten(0, 1)


# Secants known in closed form: exact at ties too, and one pass instead of four (layer norm's squares).
_SECANTS: dict[Callable[..., Tensor], Callable[[Tensor, Tensor], Tensor]] = {torch.square: torch.add}


class _RescaleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor], eps: float) -> Tensor:
        y = fn(x)
        xa, xr = _halves(x)
        if fn in _SECANTS:
            ctx.save_for_backward(_SECANTS[fn](xa, xr))
            return y
        ya, yr = _halves(y)
        dx = xa - xr
        m = (ya - yr).div_(dx)
        # Ties are rare: look for them with one fast reduction (0/0 makes the sum NaN), then build a mask.
        if (not math.isfinite(float(m.sum()))) if eps == 0 else float(dx.abs().min()) <= eps:
            # The derivative at the midpoint equals the secant up to f'''(t) dx^2 / 24: below eps
            # that is far under round-off, and it is the secant's limit where dx = 0.
            m = torch.where(dx.abs() > eps, m, _derivative(fn, ((xa + xr) / 2).detach()))
        # The multiplier needs both halves of x and y; computing it now keeps one half-size tensor
        # for backward instead of x and y.
        ctx.save_for_backward(m)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        (m,) = ctx.saved_tensors
        return _per_half(grad, m), None, None


class _RescaleReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        y = x.clamp(min=0)
        xa, xr = _halves(x)
        # The multiplier needs both halves of x; computing it now keeps one half-size tensor for
        # backward instead of x itself (y is kept by the next layer anyway).
        m = _rescale_multiplier(xa - xr, y[: len(xa)] - y[len(xa) :], (xa > 0).to(x.dtype), eps)
        ctx.save_for_backward(m)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        (m,) = ctx.saved_tensors
        return _per_half(grad, m), None


class RescaleReLU(nn.Module):
    """ReLU with DeepLIFT's rescale rule: multiplier Δy/Δx against the reference half."""

    def __init__(self, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """ReLU forward; backward multiplies by Δy/Δx against the reference half of the batch."""
        return _RescaleReLUFunction.apply(x, self.eps)


class Rescale(nn.Module):
    """Any element-wise function with DeepLIFT's rescale rule (exact summation for every such function)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], eps: float = 1e-10) -> None:
        super().__init__()
        self.fn = fn
        self.eps = eps
        self._through_zero: dict[tuple[torch.dtype, torch.device], bool] = {}

    def forward(self, x: Tensor) -> Tensor:
        """``fn`` forward; backward multiplies by Δy/Δx against the reference half of the batch."""
        return _RescaleFunction.apply(x, self.fn, self._threshold(x))

    def _threshold(self, x: Tensor) -> float:
        """Below which |Δx| the derivative replaces the secant.

        The secant of two nearly equal floats carries the rounding of f(x) and f(x0), about
        ulp(f(x)) / |Δx|. Where f(0) = 0 (ReLU-like, SiLU, GELU, Hardswish, tanh, ELU, Mish, x²,
        ...), |f(x)| is at most a few |x f'(x)| near 0, so that error stays within a few times the slope
        however small Δx is, and only exact ties (0/0) need the derivative. Elsewhere (sigmoid, exp,
        softplus, rsqrt, ...) f(x) near 0 is far larger than x, two tiny arguments a few ulps apart
        would give a wild secant, and ``eps`` applies.
        """
        key = (x.dtype, x.device)
        if key not in self._through_zero:
            try:
                self._through_zero[key] = float(self.fn(torch.zeros(1, dtype=x.dtype, device=x.device))) == 0.0
            except (RuntimeError, ValueError, TypeError):  # a function that needs its channels (PReLU)
                self._through_zero[key] = False
        return 0.0 if self._through_zero[key] else self.eps


class _RescaleMaxPoolFunction(torch.autograd.Function):
    """Max pooling with an exact DeepLIFT rule, also for overlapping windows.

    Each window's difference ``max(x) - max(x_ref)`` is split into its positive part, credited to
    the input's arg-max, and its negative part, credited to the reference's arg-max; credits are
    *summed* per position (overlapping windows share positions) and divided by that position's Δx.
    Both credited positions have Δx of the credit's sign, never zero, so the multipliers carry
    every window's difference exactly.
    """

    @staticmethod
    def forward(ctx, x: Tensor, pool: Callable[[Tensor], tuple[Tensor, Tensor]], eps: float) -> Tensor:
        _halves(x)
        y, idx = pool(x)
        ctx.eps = eps
        ctx.save_for_backward(x, y, idx)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y, idx = ctx.saved_tensors
        xa, xr = _halves(x)
        ya, yr = _halves(y)
        ia, ir = _halves(idx)
        dy = ya - yr
        pos, neg = dy.clamp(min=0), dy.clamp(max=0)
        dx = xa - xr
        n, c = xa.shape[:2]
        flat_in = (n, c, -1)

        def multiplier(g: Tensor) -> Tensor:
            credit = torch.zeros_like(dx).reshape(flat_in)
            credit.scatter_add_(2, ia.reshape(flat_in), (g * pos).reshape(flat_in))
            credit.scatter_add_(2, ir.reshape(flat_in), (g * neg).reshape(flat_in))
            plain = torch.zeros_like(dx).reshape(flat_in)
            plain.scatter_add_(2, ia.reshape(flat_in), g.reshape(flat_in))
            credit, plain = credit.view_as(dx), plain.view_as(dx)
            safe = dx.abs() > ctx.eps
            return torch.where(safe, credit / torch.where(safe, dx, torch.ones_like(dx)), plain)

        ga, gr = _halves(grad)
        return torch.cat([multiplier(ga), multiplier(gr)]), None, None


class RescaleMaxPool(nn.Module):
    """Max pooling (any dimension, adaptive or not) with the exact DeepLIFT rule."""

    def __init__(self, pool: Callable[[Tensor], tuple[Tensor, Tensor]], eps: float = 1e-10) -> None:
        super().__init__()
        self.pool = pool
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Max pooling forward; backward splits each window's Δy exactly over its inputs."""
        return _RescaleMaxPoolFunction.apply(x, self.pool, self.eps)


class Pointwise(nn.Module):
    """A functional element-wise call (``F.gelu(x)``, ``x.sigmoid()``) lifted into a module."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """``fn`` applied as it is (a call site kept as its own module)."""
        return self.fn(x)


class Pool(nn.Module):
    """A functional max pooling call lifted into a module."""

    def __init__(self, pool: Callable[[Tensor], tuple[Tensor, Tensor]]) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        """The pooling applied as it is (a call site kept as its own module)."""
        return self.pool(x)[0]


def _half_mean(t: Tensor) -> Tensor:
    """(t_input + t_reference) / 2, one half's size."""
    a, r = _halves(t)
    return (a + r) / 2


def _mean_of_halves(t: Tensor) -> Tensor:
    """(t_input + t_reference) / 2 for both halves of the batch."""
    a, r = _halves(t)
    mean = (a + r) / 2
    return torch.cat([mean, mean])


class _ProductFunction(torch.autograd.Function):
    """DeepLIFT's exact rule for a bilinear ``fn(a, b)`` of two activations (a * b, a @ b, einsum).

    f(a, b) - f(a0, b0) = f(Δa, (b + b0) / 2) + f((a + a0) / 2, Δb) holds exactly for every bilinear
    f, so a's multiplier is the map Δa -> f(Δa, b̄) and b's the map Δb -> f(ā, Δb): the Shapley
    value of the two-player game in which each operand moves from its reference to its value.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        _halves(a), _halves(b)  # both must carry the batch first
        ctx.fn = fn
        ctx.save_for_backward(a, b)
        return fn(a, b)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b = ctx.saved_tensors
        if ctx.fn is operator.mul:  # the common case (gates, layer norm), without the generic route's passes
            # Halving after the sum over broadcast dimensions touches the smaller tensor.
            return (_per_half(grad, _half_mean(b)).sum_to_size(a.shape),
                    _per_half(grad, torch.add(*_halves(a))).sum_to_size(b.shape) / 2, None)  # fmt: skip
        a_mean, b_mean = _mean_of_halves(a), _mean_of_halves(b)
        with torch.enable_grad():
            probe_a = a.detach().requires_grad_(True)
            probe_b = b.detach().requires_grad_(True)
            # Linear in the probe: the gradient is the multiplier's transpose applied to grad.
            (grad_a,) = torch.autograd.grad(ctx.fn(probe_a, b_mean), probe_a, grad)
            (grad_b,) = torch.autograd.grad(ctx.fn(a_mean, probe_b), probe_b, grad)
        return grad_a, grad_b, None


class Product(nn.Module):
    """A product of two activations (``a * b``, ``a @ b``, a two-operand einsum) with DeepLIFT's exact
    average rule; ``fn(a, b)`` must be bilinear."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """``fn(a, b)``; backward credits Δa with ``fn(·, b̄)`` and Δb with ``fn(ā, ·)``."""
        return _ProductFunction.apply(a, b, self.fn)
