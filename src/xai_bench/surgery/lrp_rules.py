"""Layer-wise relevance propagation rules, as data, and the modules that carry them in a rewritten view.

A rule says how the relevance ``R`` (the incoming gradient) at a call site's output is shared among
its inputs; the definitions are zennit's (``zennit.rules``, ``zennit.core``). For a linear layer
``z = W x + b`` (a convolution, a fully connected layer, a batch norm seen as a per-channel affine map,
or a convolution with the batch norm after it merged in), with ``x⁺ = max(x, 0)``, ``x⁻ = min(x, 0)``,
``W⁺``/``W⁻`` and ``b⁺``/``b⁻`` likewise, ``Wᵀ`` the layer's transpose (the gradient with respect to its
input) and ``stab(z) = z + ε · sign(z)`` with ``sign(0) = 1`` (zennit's ``Stabilizer``):

- ``Epsilon(ε)``: ``x · Wᵀ(R / stab(z))``.
- ``ZPlus``: ``x⁺ · W⁺ᵀ(s) + x⁻ · W⁻ᵀ(s)`` with ``s = R / stab(W⁺x⁺ + b⁺ + W⁻x⁻)``.
- ``AlphaBeta(α, β)``: ``α (x⁺ · W⁺ᵀ(s⁺) + x⁻ · W⁻ᵀ(s⁺)) - β (x⁺ · W⁻ᵀ(s⁻) + x⁻ · W⁺ᵀ(s⁻))`` with
  ``s⁺ = R / stab(W⁺x⁺ + b⁺ + W⁻x⁻)`` and ``s⁻ = R / stab(W⁻x⁺ + b⁻ + W⁺x⁻)``; ``α - β = 1``.
- ``Gamma(γ)``: with ``Wa = W + γW⁺``, ``Wb = W + γW⁻``, ``ba = b + γb⁺``, ``bb = b + γb⁻``, where
  ``z > 0``: ``s⁺ = R / stab(Wa x⁺ + ba + Wb x⁻)`` spread as ``x⁺ · Waᵀ(s⁺) + x⁻ · Wbᵀ(s⁺)``; where
  ``z < 0``: ``s⁻ = R / stab(Wb x⁺ + bb + Wa x⁻)`` spread as ``x⁺ · Wbᵀ(s⁻) + x⁻ · Waᵀ(s⁻)``.
- ``ZBox(low, high)``: ``x · Wᵀ(s) - l · W⁺ᵀ(s) - h · W⁻ᵀ(s)`` with ``s = R / stab(z - (W⁺l + b⁺) - (W⁻h + b⁻))``
  and ``l``, ``h`` the bounds broadcast to the input.
- ``Flat``: ``1ᵀ(R / stab(1 · 1))``: every weight and input set to one, no bias.
- ``WSquare``: ``(W²)ᵀ(R / stab(W² · 1 + b²))``.

And for the other call sites:

- ``Norm``: sums of branches and average pooling, ``x_i · ∂z/∂x_i · R / stab(z)`` per operand (the
  epsilon rule of an operation without parameters).
- ``Pass``: element-wise functions (activations, constant scalings) hand ``R`` to their input unchanged.
- ``Gradient``: the plain gradient (max pooling: all to the window's winner; concatenations and
  reshapes route ``R`` by position).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import json_safe
from ..core.errors import InvalidParameterError, SurgeryError

# What a call site is, for the rules that fit it.
LAYER = "layer"  # Conv, Linear, a batch norm on its own
SUM = "sum"  # a sum of branches, average pooling, a mean or sum over dimensions
ACTIVATION = "activation"  # element-wise functions
SCALING = "scaling"  # an activation times or divided by a constant
MAX_POOL = "max_pool"

SITE_WORDS = {
    LAYER: "a linear layer (Conv, Linear, BatchNorm)",
    SUM: "a sum or average pooling",
    ACTIVATION: "an activation",
    SCALING: "an element-wise scaling",
    MAX_POOL: "a max pooling",
}


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon * sign(z)`` with ``sign(0) = 1``: zennit's ``Stabilizer``, denominators kept off zero."""
    return z + ((z == 0).to(z) + z.sign()) * epsilon


def _check_number(rule: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidParameterError(f"{rule}: {name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _check_bound(name: str, value: Any) -> float | Tensor:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, Tensor) and value.is_floating_point() and bool(torch.isfinite(value).all()):
        if value.dim() == 4 and value.shape[0] != 1:
            raise InvalidParameterError(
                f"zbox: {name} is one bound for every sample: shape (C, H, W), (C, 1, 1) or (1, C, H, W), "
                f"got {tuple(value.shape)}."
            )
        return value.detach()
    raise InvalidParameterError(
        f"zbox: {name} must be a finite number or a finite float tensor broadcastable to one input (C, H, W), "
        f"got {value!r}; pass e.g. low=0.0, high=1.0 for images in [0, 1]."
    )


class Rule:
    """Base of the rules: data (their parameters) and what they do to the relevance."""

    name: ClassVar[str]
    #: the kinds of call sites the rule is defined for
    fits: ClassVar[frozenset[str]]

    def describe(self) -> str:
        """The rule and its parameters, e.g. ``epsilon(epsilon=1e-06)``, for reports and cache keys."""
        values = ", ".join(f"{f.name}={json_safe(getattr(self, f.name))}" for f in fields(self))  # type: ignore[arg-type]
        return f"{self.name}({values})"


class LayerRule(Rule):
    """A rule for linear layers: ``prepare`` runs in the forward pass (once for every target of the
    pass), ``relevance`` in each backward pass."""

    fits: ClassVar[frozenset[str]] = frozenset({LAYER})

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        """Return what :meth:`relevance` needs of the input ``x`` and the layer's output ``z``."""
        raise NotImplementedError

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        """Return the relevance at the layer's input (of ``shape``) for the relevance ``r`` at its output."""
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(LayerRule):
    """``x · Wᵀ(R / stab(z))``; conserves relevance (up to the bias) as ``epsilon`` goes to 0."""

    epsilon: float = 1e-6
    name: ClassVar[str] = "epsilon"

    def __post_init__(self) -> None:
        _check_number(self.name, "epsilon", self.epsilon)

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        return x, stabilize(z, self.epsilon)

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        x, denominator = saved
        return x * layer.transpose(layer.weight, r / denominator, shape)


def _signs(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """``x⁺`` and ``x⁻``; ``x`` itself and None when no input is negative (after a ReLU): its terms are 0."""
    if not bool((x < 0).any()):
        return x, None
    return x.clamp(min=0), x.clamp(max=0)


Weights = Tensor | Callable[[], Tensor]  # the weights for x⁻, made only where some input is negative


def _made(weights: Weights) -> Tensor:
    return weights if isinstance(weights, Tensor) else weights()


def _sum_split(layer: Affine, xp: Tensor, xn: Tensor | None, wp: Tensor, bp: Tensor | None, wn: Weights) -> Tensor:
    """``wp x⁺ + bp + wn x⁻``."""
    z = layer.apply(xp, wp, bp)
    return z if xn is None else z + layer.apply(xn, _made(wn), None)


def _spread(layer: Affine, shape: torch.Size, xp: Tensor, xn: Tensor | None, wp: Tensor, wn: Weights, s: Tensor):
    """``x⁺ · wpᵀ(s) + x⁻ · wnᵀ(s)``."""
    r = xp * layer.transpose(wp, s, shape)
    return r if xn is None else r + xn * layer.transpose(_made(wn), s, shape)


def _positive(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _negative(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


@dataclass(frozen=True)
class ZPlus(LayerRule):
    """Positive contributions only (alpha 1, beta 0): ``x⁺ · W⁺ᵀ(s) + x⁻ · W⁻ᵀ(s)``."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "zplus"

    def __post_init__(self) -> None:
        _check_number(self.name, "stabilizer", self.stabilizer)

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor | None, ...]:
        xp, xn = _signs(x)
        positive = _sum_split(layer, xp, xn, layer.positive(), _positive(layer.bias), layer.negative)
        return xp, xn, stabilize(positive, self.stabilizer)

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        xp, xn, denominator = saved
        return _spread(layer, shape, xp, xn, layer.positive(), layer.negative, r / denominator)


@dataclass(frozen=True)
class AlphaBeta(LayerRule):
    """Positive contributions weighted by ``alpha``, negative ones by ``beta`` (``alpha - beta = 1``)."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    name: ClassVar[str] = "alpha_beta"

    def __post_init__(self) -> None:
        alpha = _check_number(self.name, "alpha", self.alpha)
        beta = _check_number(self.name, "beta", self.beta)
        _check_number(self.name, "stabilizer", self.stabilizer)
        if alpha - beta != 1.0:
            raise InvalidParameterError(
                f"alpha_beta: alpha - beta must be 1 (relevance is conserved only then), got alpha={alpha!r}, "
                f"beta={beta!r}; e.g. alpha=2, beta=1 or alpha=1, beta=0."
            )

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor | None, ...]:
        b = layer.bias
        wp, wn = layer.positive(), layer.negative()
        xp, xn = _signs(x)
        positive = stabilize(_sum_split(layer, xp, xn, wp, _positive(b), wn), self.stabilizer)
        negative = stabilize(_sum_split(layer, xp, xn, wn, _negative(b), wp), self.stabilizer) if self.beta else None
        return xp, xn, positive, negative

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        xp, xn, positive, negative = saved
        wp, wn = layer.positive(), layer.negative()
        result = self.alpha * _spread(layer, shape, xp, xn, wp, wn, r / positive)
        if self.beta:
            result = result - self.beta * _spread(layer, shape, xp, xn, wn, wp, r / negative)
        return result


@dataclass(frozen=True)
class Gamma(LayerRule):
    """Positive weights favoured by ``gamma``: the generalised gamma rule (zennit's ``Gamma``)."""

    gamma: float = 0.25
    stabilizer: float = 1e-6
    name: ClassVar[str] = "gamma"

    def __post_init__(self) -> None:
        _check_number(self.name, "gamma", self.gamma)
        _check_number(self.name, "stabilizer", self.stabilizer)

    def _weights(self, layer: Affine) -> tuple[Tensor, Tensor]:
        """``W + γW⁺`` and ``W + γW⁻``, made once per pass."""

        def make() -> tuple[Tensor, Tensor]:
            return layer.weight + self.gamma * layer.positive(), layer.weight + self.gamma * layer.negative()

        return layer.once(("gamma", self.gamma), make)

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor | None, ...]:
        b = layer.bias
        wa, wb = self._weights(layer)
        ba = None if b is None else b + self.gamma * b.clamp(min=0)
        bb = None if b is None else b + self.gamma * b.clamp(max=0)
        xp, xn = _signs(x)
        # The outputs' signs pick the denominator: where z > 0 the favoured positive part, else the negative.
        positive = (z > 0).to(z) / stabilize(_sum_split(layer, xp, xn, wa, ba, wb), self.stabilizer)
        negative = (z < 0).to(z) / stabilize(_sum_split(layer, xp, xn, wb, bb, wa), self.stabilizer)
        return xp, xn, positive, negative

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        xp, xn, positive, negative = saved
        wa, wb = self._weights(layer)
        return _spread(layer, shape, xp, xn, wa, wb, r * positive) + _spread(layer, shape, xp, xn, wb, wa, r * negative)


@dataclass(frozen=True, eq=False)
class ZBox(LayerRule):
    """For the input layer of bounded inputs: contributions measured against the box ``[low, high]``.

    ``low`` and ``high`` are numbers or tensors broadcastable to the layer's input ((C, H, W), (C, 1, 1)
    or (1, C, H, W)).
    """

    low: float | Tensor
    high: float | Tensor
    stabilizer: float = 1e-6
    name: ClassVar[str] = "zbox"

    def __post_init__(self) -> None:
        low, high = _check_bound("low", self.low), _check_bound("high", self.high)
        try:
            above = bool((torch.as_tensor(low) > torch.as_tensor(high)).any())
        except RuntimeError:
            raise InvalidParameterError(
                f"zbox: low {tuple(torch.as_tensor(low).shape)} and high {tuple(torch.as_tensor(high).shape)} do "
                "not broadcast together; give bounds of one shape."
            ) from None
        if above:
            raise InvalidParameterError("zbox: low must not exceed high anywhere; swap them or fix the bounds.")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        _check_number(self.name, "stabilizer", self.stabilizer)

    def bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``low`` and ``high`` broadcast to ``x`` (N, ...), in its dtype and on its device."""

        def expand(bound: float | Tensor, what: str) -> Tensor:
            t = torch.as_tensor(bound, dtype=x.dtype, device=x.device)
            if t.dim() == x.dim() - 1:  # one sample's bounds: (C, H, W) or (C, 1, 1)
                t = t.unsqueeze(0)
            try:
                return t.expand_as(x)
            except RuntimeError:
                raise InvalidParameterError(
                    f"zbox: {what} of shape {tuple(t.shape)} does not broadcast to the input layer's input of shape "
                    f"{tuple(x.shape[1:])} per sample."
                ) from None

        return expand(self.low, "low"), expand(self.high, "high")

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        b = layer.bias
        wp, wn = layer.positive(), layer.negative()
        low, high = self.bounds(x)
        # zennit's three terms each keep their (clamped) bias; together they cancel.
        lowest = layer.apply(low, wp, _positive(b))
        highest = layer.apply(high, wn, _negative(b))
        return x, stabilize(z - lowest - highest, self.stabilizer)

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        x, denominator = saved
        low, high = self.bounds(x)
        wp, wn = layer.positive(), layer.negative()
        s = r / denominator
        return (x * layer.transpose(layer.weight, s, shape) - low * layer.transpose(wp, s, shape)
                - high * layer.transpose(wn, s, shape))  # fmt: skip


@dataclass(frozen=True)
class Flat(LayerRule):
    """Relevance spread evenly over each output's receptive field: weights and inputs all one, no bias."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "flat"

    def __post_init__(self) -> None:
        _check_number(self.name, "stabilizer", self.stabilizer)

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        ones = x.new_ones((1, *x.shape[1:]))  # the same for every sample
        return (stabilize(layer.apply(ones, self._ones(layer), None), self.stabilizer),)

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        (denominator,) = saved
        return layer.transpose(self._ones(layer), r / denominator, shape)

    @staticmethod
    def _ones(layer: Affine) -> Tensor:
        return layer.once("ones", lambda: torch.ones_like(layer.weight))


@dataclass(frozen=True)
class WSquare(LayerRule):
    """Relevance spread by squared weights, inputs all one (zennit squares the bias too)."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "wsquare"

    def __post_init__(self) -> None:
        _check_number(self.name, "stabilizer", self.stabilizer)

    def prepare(self, layer: Affine, x: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        ones = x.new_ones((1, *x.shape[1:]))
        b = layer.bias
        squared = layer.apply(ones, self._squared(layer), None if b is None else b.square())
        return (stabilize(squared, self.stabilizer),)

    def relevance(self, layer: Affine, shape: torch.Size, r: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        (denominator,) = saved
        return layer.transpose(self._squared(layer), r / denominator, shape)

    @staticmethod
    def _squared(layer: Affine) -> Tensor:
        return layer.once("squared", lambda: layer.weight.square())


@dataclass(frozen=True)
class Norm(Rule):
    """Sums of branches and average pooling: each operand's share of the output, ``x_i ∂z/∂x_i R / stab(z)``."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "norm"
    fits: ClassVar[frozenset[str]] = frozenset({SUM})

    def __post_init__(self) -> None:
        _check_number(self.name, "stabilizer", self.stabilizer)


@dataclass(frozen=True)
class Pass(Rule):
    """Element-wise functions hand the relevance at their output to their input unchanged."""

    name: ClassVar[str] = "pass"
    fits: ClassVar[frozenset[str]] = frozenset({ACTIVATION, SCALING})


@dataclass(frozen=True)
class Gradient(Rule):
    """The plain gradient: max pooling gives all to the winner of each window."""

    name: ClassVar[str] = "gradient"
    fits: ClassVar[frozenset[str]] = frozenset({SUM, ACTIVATION, SCALING, MAX_POOL})


#: rule names accepted where a rule is expected, and their classes
RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (Epsilon, ZPlus, AlphaBeta, Gamma, ZBox, Flat, WSquare, Norm, Pass, Gradient)
}


@dataclass(frozen=True, eq=False)
class Composite:
    """Which rule each kind of call site takes: a named composite's defaults, before the user's map."""

    name: str
    #: the input layer's rule (the first Conv or Linear the input reaches), or None: as the others
    first: LayerRule | None
    conv: LayerRule
    linear: LayerRule
    #: a batch norm that does not follow a layer it could be merged into, as its own affine layer
    batch_norm: LayerRule
    norm: Rule
    activation: Rule = Pass()
    scaling: Rule = Pass()
    max_pool: Rule = Gradient()


#: the named composites: zennit's, and epsilon everywhere
COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon")


def composite_rules(
    name: str, *, epsilon: float, gamma: float, stabilizer: float, low: Any = None, high: Any = None
) -> Composite:
    """The composite ``name`` with its parameters (``low``/``high`` for ``epsilon_gamma_box``'s z-box)."""
    linear = Epsilon(epsilon)
    shared = {"linear": linear, "batch_norm": linear, "norm": Norm(stabilizer)}
    if name == "epsilon_plus_flat":
        return Composite(name, Flat(stabilizer), ZPlus(stabilizer), **shared)
    if name == "epsilon_gamma_box":
        return Composite(name, ZBox(low, high, stabilizer), Gamma(gamma, stabilizer), **shared)
    if name == "epsilon_alpha2_beta1":
        return Composite(name, None, AlphaBeta(2.0, 1.0, stabilizer), **shared)
    if name == "epsilon":
        return Composite(name, None, linear, **shared)
    raise InvalidParameterError(f"unknown composite {name!r}; choose one of {', '.join(map(repr, COMPOSITES))}.")


class Affine:
    """A linear layer's parameters as the rules see them, read from the model at each forward pass.

    ``layer`` is a Conv or Linear module (or None for a batch norm on its own); ``norm`` a batch norm
    merged after it (zennit's ``MergeBatchNorm``: ``W · γ/σ`` and ``(b - μ) · γ/σ + β``, on copies) or,
    without a layer, the batch norm itself as the per-channel affine map ``x · γ/σ + (β - μ · γ/σ)``.
    """

    def __init__(self, layer: nn.Module | None, norm: BatchNormParams | None) -> None:
        self.layer, self.norm = layer, norm
        self.weight, self.bias = self._merged()
        self._made: dict[Any, Any] = {}

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per pass: every target's backward uses the same modified weights."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def positive(self) -> Tensor:
        """``W⁺``."""
        return self.once("positive", lambda: self.weight.clamp(min=0))

    def negative(self) -> Tensor:
        """``W⁻``."""
        return self.once("negative", lambda: self.weight.clamp(max=0))

    def _merged(self) -> tuple[Tensor, Tensor | None]:
        if self.norm is None:
            return self.layer.weight.detach(), None if self.layer.bias is None else self.layer.bias.detach()
        scale, mean, shift = self.norm.scale_mean_shift()
        if self.layer is None:
            return scale, (0 - mean) * scale + shift
        w, b = self.layer.weight.detach(), self.layer.bias
        index: tuple[Any, ...]
        if isinstance(self.layer, nn.modules.conv._ConvTransposeNd):
            index = (None, slice(None), *((None,) * (w.dim() - 2)))
        else:
            index = (slice(None), *((None,) * (w.dim() - 1)))
        bias = (0 if b is None else b.detach()) - mean
        return w * scale[index], bias * scale + shift

    def apply(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The layer's map with other parameters: ``weight x + bias``."""
        layer = self.layer
        if layer is None:
            shape = (1, -1, *((1,) * (x.dim() - 2)))
            y = x * weight.reshape(shape)
            return y if bias is None else y + bias.reshape(shape)
        if isinstance(layer, nn.Linear):
            return F.linear(x, weight, bias)
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            transposed = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[x.dim() - 3]
            return transposed(x, weight, bias, layer.stride, layer.padding, layer.output_padding, layer.groups,
                              layer.dilation)  # fmt: skip
        return layer._conv_forward(x, weight, bias)

    def transpose(self, weight: Tensor, s: Tensor, shape: torch.Size) -> Tensor:
        """``weightᵀ s``: the gradient of ``weight x`` with respect to ``x`` (of ``shape``) applied to ``s``."""
        layer = self.layer
        if layer is None:
            return s * weight.reshape(1, -1, *((1,) * (s.dim() - 2)))
        if isinstance(layer, nn.Linear):
            return s @ weight
        plain = isinstance(layer, nn.modules.conv._ConvNd) and not isinstance(layer, nn.modules.conv._ConvTransposeNd)
        if plain and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
            grad = (torch.nn.grad.conv1d_input, torch.nn.grad.conv2d_input, torch.nn.grad.conv3d_input)[s.dim() - 3]
            return grad(shape, weight, s, layer.stride, layer.padding, layer.dilation, layer.groups)
        # Other padding modes and transposed convolutions: the gradient of the map itself (linear, so
        # its value at zero serves).
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
            probe = s.new_zeros(shape, requires_grad=True)
            (grad,) = torch.autograd.grad(self.apply(probe, weight, None), probe, s)
        return grad


def _identity(t: Tensor) -> Tensor:
    return t


class BatchNormParams:
    """A batch norm's running statistics and affine parameters, read when needed (they follow the model)."""

    def __init__(self, tensors: Callable[[], tuple[Tensor, Tensor, Tensor | None, Tensor | None]], eps: float,
                 channels: int) -> None:  # fmt: skip
        self.tensors, self.eps, self.channels = tensors, eps, channels

    @classmethod
    def of(cls, module: nn.modules.batchnorm._BatchNorm) -> BatchNormParams:
        """The parameters of a batch norm module."""
        return cls(lambda: (module.running_mean, module.running_var, module.weight, module.bias), module.eps,
                   module.num_features)  # fmt: skip

    def scale_mean_shift(self) -> tuple[Tensor, Tensor, Tensor]:
        """``γ / sqrt(var + eps)``, the running mean and ``β`` (ones and zeros where the norm has no affine part)."""
        mean, var, weight, bias = (None if t is None else t.detach() for t in self.tensors())
        denominator = (var + self.eps) ** 0.5
        scale = 1 / denominator if weight is None else weight / denominator
        return scale, mean, torch.zeros_like(mean) if bias is None else bias

    def apply(self, x: Tensor) -> Tensor:
        """The batch norm with its running statistics (eval mode)."""
        mean, var, weight, bias = self.tensors()
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)


class _LayerRuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, site: LrpLayer) -> Tensor:
        y = site.original(x)
        layer = Affine(site.layer, site.norm)
        ctx.site, ctx.layer, ctx.shape = site, layer, x.shape
        # Parameters stay on ctx (not saved tensors): they are not activations, and the memory probe
        # counts saved tensors as the cost of an image.
        ctx.save_for_backward(*site.rule.prepare(layer, x, y))
        return y

    @staticmethod
    def backward(ctx, r: Tensor):
        return ctx.site.rule.relevance(ctx.layer, ctx.shape, r, ctx.saved_tensors), None


class LrpLayer(nn.Module):
    """A Conv or Linear call site (with the batch norm after it merged in), or a batch norm on its own, whose
    backward is an LRP rule; its forward computes what the model's modules compute, in the same steps."""

    def __init__(self, rule: LayerRule, layer: nn.Module | None, norm: BatchNormParams | None, where: str) -> None:
        super().__init__()
        self.rule = rule
        self.layer = layer  # the model's module, shared: its parameters are read at each pass
        self.norm = norm
        self.where = where

    def original(self, x: Tensor) -> Tensor:
        """The model's computation: the layer's forward (without its hooks), then the batch norm's."""
        y = x if self.layer is None else self.layer.forward(x)
        if self.norm is not None:
            if self.layer is not None and isinstance(self.layer, nn.Linear) and y.dim() != 2:
                raise SurgeryError(
                    f"lrp: {self.where} is followed by a batch norm over a {y.dim()}-d output; merging it into the "
                    "Linear layer assumes (N, features) outputs."
                )
            y = self.norm.apply(y)
        return y

    def forward(self, x: Tensor) -> Tensor:
        """The layer's output; backward shares the output's relevance among the inputs by the rule."""
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.original(x)
        return _LayerRuleFunction.apply(x, self)

    def extra_repr(self) -> str:
        return f"{self.rule.describe()}, {self.where}"


class _NormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn: Callable[..., Tensor], stabilizer: float, *operands: Tensor) -> Tensor:
        z = fn(*operands)
        ctx.fn = fn
        ctx.save_for_backward(stabilize(z, stabilizer), *operands)
        return z

    @staticmethod
    def backward(ctx, r: Tensor):
        denominator, *operands = ctx.saved_tensors
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_identity, _identity):
            probes = [o.detach().requires_grad_(True) for o in operands]
            grads = torch.autograd.grad(ctx.fn(*probes), probes, r / denominator, allow_unused=True,
                                        materialize_grads=True)  # fmt: skip
        return (None, None, *(o * g for o, g in zip(operands, grads, strict=True)))


def _filled(args: tuple[Any, ...], positions: tuple[int, ...], operands: tuple[Any, ...]) -> list[Any]:
    filled = list(args)
    for position, value in zip(positions, operands, strict=True):
        filled[position] = value
    return filled


class NormRule(nn.Module):
    """A sum of branches or an average pooling with the norm rule: each operand keeps its share of the output."""

    def __init__(self, call: Callable[..., Tensor], positions: tuple[int, ...], stabilizer: float, where: str) -> None:
        super().__init__()
        self.call, self.positions, self.stabilizer, self.where = call, positions, stabilizer, where

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The call as the model makes it; backward gives operand ``i`` the relevance ``x_i ∂z/∂x_i R / stab(z)``."""
        operands = tuple(args[p] for p in self.positions)

        def fn(*values: Tensor) -> Tensor:
            return self.call(*_filled(args, self.positions, values), **kwargs)

        if not (torch.is_grad_enabled() and any(o.requires_grad for o in operands)):
            return fn(*operands)
        return _NormFunction.apply(fn, self.stabilizer, *operands)

    def extra_repr(self) -> str:
        return f"norm(stabilizer={self.stabilizer}), {self.where}"


class _PassFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        ctx.shape = x.shape
        return fn(x)

    @staticmethod
    def backward(ctx, r: Tensor):
        return None, (r if r.shape == ctx.shape else r.sum_to_size(ctx.shape))


class PassRule(nn.Module):
    """An element-wise call (an activation, a constant scaling) that hands its output's relevance to its input."""

    def __init__(self, call: Callable[..., Tensor], position: int, where: str) -> None:
        super().__init__()
        self.call, self.position, self.where = call, position, where

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The call as the model makes it; backward passes the relevance through unchanged."""
        x = args[self.position]

        def fn(value: Tensor) -> Tensor:
            return self.call(*_filled(args, (self.position,), (value,)), **kwargs)

        if not (torch.is_grad_enabled() and x.requires_grad):
            return fn(x)
        return _PassFunction.apply(fn, x)

    def extra_repr(self) -> str:
        return f"pass, {self.where}"
