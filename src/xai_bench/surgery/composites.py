"""Layer norm, softmax, attention and quotients as compositions of operations that have exact rules.

Each module here computes what the operation computes, through rule modules made by the rule set
in force (for DeepLIFT: the rescale rule for the element-wise steps and the average rule for the
products), so the composition is exact wherever its parts are, and no new approximation enters.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import SurgeryError, warn
from .rules import Product, Rescale, _halves

Factory = Callable[[Callable[..., Tensor]], nn.Module]


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    return a @ b


class _Parts(nn.Module):
    """The rule modules a composition is made of, one per step (each keeps its own saved tensors)."""

    def __init__(self, pointwise: Factory, product: Factory) -> None:
        super().__init__()
        self._pointwise, self._product = pointwise, product

    def pointwise(self, fn: Callable[[Tensor], Tensor]) -> nn.Module:
        return self._pointwise(fn)

    def product(self, fn: Callable[[Tensor, Tensor], Tensor]) -> nn.Module:
        return self._product(fn)


class Quotient(_Parts):
    """``a / b`` of two activations as ``a * (1 / b)``."""

    def __init__(self, pointwise: Factory, product: Factory) -> None:
        super().__init__(pointwise, product)
        self.reciprocal = self.pointwise(torch.reciprocal)
        self.times = self.product(operator.mul)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """``a * reciprocal(b)``."""
        return self.times(a, self.reciprocal(b))


class Softmax(_Parts):
    """``softmax(x, dim)`` as ``exp(x - c) * reciprocal(sum(exp(x - c)))``.

    The shift ``c`` is the larger of the input's and the reference's maxima, the same for both
    halves of the batch: a constant, so it moves nothing, and ``exp`` never overflows.
    """

    def __init__(self, pointwise: Factory, product: Factory) -> None:
        super().__init__(pointwise, product)
        self.exp = self.pointwise(torch.exp)
        self.reciprocal = self.pointwise(torch.reciprocal)
        self.times = self.product(operator.mul)

    def forward(self, x: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
        """Softmax over ``dim``, composed of exact steps (in float64: the shift shared by both halves
        leaves the half with the lower peak far down the exponential)."""
        if dim is None:
            raise SurgeryError("softmax without dim= cannot be rewritten; pass dim explicitly.")
        result_dtype = dtype or x.dtype
        work = x.to(torch.float64) if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else x
        peak = work.detach().amax(dim, keepdim=True)
        shift = torch.maximum(*_halves(peak))
        e = self.exp(work - torch.cat([shift, shift]))
        total = e.sum(dim, keepdim=True)
        if bool((total == 0).any()):
            raise SurgeryError(
                "softmax: the input's and the reference's largest scores differ by more than float64's exponential "
                "can span, so the exact rule cannot be computed; use a reference closer to the input."
            )
        return self.times(e, self.reciprocal(total)).to(result_dtype)


class _LayerNormRuleFunction(torch.autograd.Function):
    """Layer norm's forward (the fused kernel), and in backward the multipliers the composition below
    gives, in closed form: with c̄ = (c + c0)/2, r̄ = (r + r0)/2 and m_r the rescale multiplier of rsqrt,
    the centred input's gradient is g r̄ + (2/n) (Σ g c̄) m_r c̄, then centred again."""

    @staticmethod
    def forward(ctx, x: Tensor, dims: tuple[int, ...], eps: float, rule_eps: float,
                check: Callable[[Tensor, float], None]) -> Tensor:  # fmt: skip
        centred = x - x.mean(dims, keepdim=True)
        variance = centred.square().mean(dims, keepdim=True)
        check(variance, eps)
        variance = variance + eps
        r = variance.rsqrt()
        c_value, c_reference = _halves(centred)
        v_value, v_reference = _halves(variance)
        r_value, r_reference = _halves(r)
        dv = v_value - v_reference
        m_r = (r_value - r_reference) / dv
        near = dv.abs() <= rule_eps
        if bool(near.any()):  # rsqrt's derivative at the midpoint, as the rescale rule takes it
            m_r = torch.where(near, -0.5 * ((v_value + v_reference) / 2) ** -1.5, m_r)
        ctx.dims, ctx.n = dims, centred[0].numel() // max(1, r[0].numel())
        ctx.save_for_backward((c_value + c_reference) / 2, (r_value + r_reference) / 2, m_r)
        return centred * r

    @staticmethod
    def backward(ctx, grad: Tensor):
        c_mean, r_mean, m_r = ctx.saved_tensors
        g = grad.unflatten(0, (2, -1))
        g_r = (g * c_mean).sum(ctx.dims, keepdim=True)
        g_c = g * r_mean + (2.0 / ctx.n) * g_r * m_r * c_mean
        g_c = g_c - g_c.mean(ctx.dims, keepdim=True)
        return g_c.flatten(0, 1), None, None, None, None


class LayerNorm(_Parts):
    """Layer norm as centring (linear), the mean of squares, ``rsqrt`` and a product, then the affine.

    Built from an ``nn.LayerNorm`` (``module=``, whose parameters it uses) or for ``F.layer_norm``
    calls (the arguments arrive with the call).
    """

    def __init__(self, pointwise: Factory, product: Factory, module: nn.LayerNorm | None = None,
                 where: str = "") -> None:  # fmt: skip
        super().__init__(pointwise, product)
        self.norm = module
        self.where = where
        self.square = self.pointwise(torch.square)
        self.rsqrt = self.pointwise(torch.rsqrt)
        self.times = self.product(operator.mul)
        # DeepLIFT's own rules have a closed form for the whole composition: fewer passes, same multipliers.
        self.fused = isinstance(self.square, Rescale) and isinstance(self.rsqrt, Rescale) and isinstance(
            self.times, Product
        )  # fmt: skip

    def forward(self, x: Tensor, normalized_shape: Any = None, weight: Tensor | None = None,
                bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:  # fmt: skip
        """Normalise over the last ``len(normalized_shape)`` dimensions, composed of exact steps."""
        if self.norm is not None:
            normalized_shape, weight, bias, eps = (self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                                                   self.norm.eps)  # fmt: skip
        dims = tuple(range(-len(tuple(normalized_shape)), 0))
        if self.fused:
            y = _LayerNormRuleFunction.apply(x, dims, eps, self.rsqrt.eps, self._check_reference)
        else:
            centred = x - x.mean(dims, keepdim=True)
            variance = self.square(centred).mean(dims, keepdim=True)
            self._check_reference(variance.detach(), eps)
            y = self.times(centred, self.rsqrt(variance + eps))
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        return y

    def _check_reference(self, variance: Tensor, eps: float) -> None:
        """Warn where the reference is constant over the normalised features but the input is not."""
        value, reference = _halves(variance)
        flat = (reference < eps) & (value > 100 * eps)
        if bool(flat.any()):
            warn(
                f"layer norm {self.where}: the reference is constant over the normalised features where the "
                "input is not, so 1/sqrt(variance + eps) is far larger for the reference. DeepLIFT's maps through "
                "it are then made of large terms that cancel: exact in exact arithmetic, but in float32 the "
                "rounding of those terms can exceed the map's sum. Use a reference that varies there (a blurred "
                "input, the training mean image, a set of training images) or float64."
            )


class Attention(_Parts):
    """``scaled_dot_product_attention(q, k, v)`` as ``softmax(q @ kᵀ · scale) @ v`` (no mask, no dropout)."""

    def __init__(self, pointwise: Factory, product: Factory) -> None:
        super().__init__(pointwise, product)
        self.scores = self.product(_matmul)
        self.softmax = Softmax(pointwise, product)
        self.mix = self.product(_matmul)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:  # fmt: skip
        """Attention of ``q`` over ``k`` and ``v``, composed of exact steps."""
        if attn_mask is not None or is_causal or dropout_p or enable_gqa:
            raise SurgeryError(
                "scaled_dot_product_attention with a mask, is_causal, dropout or grouped heads has no exact rule "
                "here; call it without them (eval mode has no dropout)."
            )
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        weights = self.softmax(self.scores(q, k.transpose(-2, -1)) * scale, -1)
        return self.mix(weights, v)


class MultiheadAttention(_Parts):
    """``nn.MultiheadAttention`` (without masks or added key/value biases) with exact steps; shares its weights."""

    def __init__(self, pointwise: Factory, product: Factory, module: nn.MultiheadAttention) -> None:
        super().__init__(pointwise, product)
        self.mha = module
        self.attention = Attention(pointwise, product)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, None]:  # fmt: skip
        """The module's output; attention weights are not returned (``None``), as with ``need_weights=False``."""
        m = self.mha
        masked = key_padding_mask is not None or attn_mask is not None or is_causal
        if masked or m.bias_k is not None or m.add_zero_attn:
            raise SurgeryError(
                "nn.MultiheadAttention with masks, bias_k/bias_v or add_zero_attn has no exact rule here."
            )
        if not m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        e, heads = m.embed_dim, m.num_heads
        if m._qkv_same_embed_dim:
            w_q, w_k, w_v = m.in_proj_weight.split(e)
        else:
            w_q, w_k, w_v = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
        b_q, b_k, b_v = m.in_proj_bias.split(e) if m.in_proj_bias is not None else (None, None, None)

        def split(t: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
            projected = nn.functional.linear(t, w, b)
            return projected.reshape(t.shape[0], t.shape[1], heads, e // heads).transpose(1, 2)

        mixed = self.attention(split(query, w_q, b_q), split(key, w_k, b_k), split(value, w_v, b_v))
        out = nn.functional.linear(mixed.transpose(1, 2).reshape(query.shape[0], query.shape[1], e),
                                   m.out_proj.weight, m.out_proj.bias)  # fmt: skip
        return (out if m.batch_first else out.transpose(0, 1)), None


def composite(kind: str, pointwise: Factory, product: Factory, module: Any = None, where: str = "") -> nn.Module:
    """The composition for a site of ``kind`` (``layer_norm``, ``softmax``, ``attention``, ``mha``, ``quotient``)."""
    if kind == "layer_norm":
        return LayerNorm(pointwise, product, module, where)
    if kind == "mha":
        return MultiheadAttention(pointwise, product, module)
    return {"softmax": Softmax, "attention": Attention, "quotient": Quotient}[kind](pointwise, product)
