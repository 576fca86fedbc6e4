"""DeepLIFT's rules for modern networks, each against a closed form: element-wise functions (the secant),
products (the two-player Shapley value by enumeration), layer norm and softmax (the composition by hand)."""

from __future__ import annotations

import itertools
import math
import operator
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xai_bench.surgery import LayerNorm, Product, Rescale, Softmax

ELEMENTWISE = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "elu": F.elu,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
    "softplus": F.softplus,
    "mish": F.mish,
    "square": lambda t: t**2,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "exp": torch.exp,
    "reciprocal": torch.reciprocal,
}
POSITIVE = {"sqrt", "rsqrt", "reciprocal"}


def _randn(shape, g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _multipliers(rule: torch.nn.Module, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The rule's multipliers of the input half: the gradient of sum(output) through the rule."""
    both = torch.cat([x, reference]).requires_grad_(True)
    rule(both).sum().backward()
    return both.grad[: len(x)]


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_an_elementwise_rule_is_the_secant_and_the_derivative_where_input_and_reference_agree(name):
    fn = ELEMENTWISE[name]
    g = torch.Generator().manual_seed(0)
    x, x0 = _randn((2, 64), g), _randn((2, 64), g)
    if name in POSITIVE:
        x, x0 = x.abs() + 0.1, x0.abs() + 0.1
    x0[:, :8] = x[:, :8]  # ties: the secant is undefined, its limit is the derivative
    m = _multipliers(Rescale(fn), x, x0)
    secant = (fn(x) - fn(x0)) / (x - x0)
    torch.testing.assert_close(m[:, 8:], secant[:, 8:], rtol=1e-12, atol=1e-12)
    probe = x[:, :8].clone().requires_grad_(True)
    (derivative,) = torch.autograd.grad(fn(probe).sum(), probe)
    torch.testing.assert_close(m[:, :8], derivative, rtol=1e-12, atol=1e-12)
    assert torch.allclose((m * (x - x0)).sum(), (fn(x) - fn(x0)).sum(), rtol=1e-12)


def test_the_fallback_below_eps_is_the_derivative_at_the_midpoint():
    x = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    x0 = x - 1e-12
    m = _multipliers(Rescale(torch.exp, eps=1e-10), x, x0)
    torch.testing.assert_close(m, torch.exp((x + x0) / 2), rtol=1e-14, atol=0)


def _shapley_of_a(f, a, a0, b, b0) -> torch.Tensor:
    """Player a's Shapley value in the game v(S) = f(a if a in S else a0, b if b in S else b0), by enumeration."""
    value = 0.0
    for with_b in (False, True):  # the coalitions a can join: {} and {b}, each with weight 1/2
        other = b if with_b else b0
        value = value + 0.5 * (f(a, other) - f(a0, other))
    return value


PRODUCTS = {
    "mul": (operator.mul, (2, 3, 4, 4), (2, 3, 1, 1)),  # squeeze-and-excitation gating, broadcast
    "matmul": (operator.matmul, (2, 2, 5, 4), (2, 2, 4, 3)),  # attention's q @ kᵀ
    "einsum": (lambda a, b: torch.einsum("nij,njk->nik", a, b), (2, 3, 4), (2, 4, 2)),
}


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_a_product_gives_each_operand_its_shapley_value(name):
    f, shape_a, shape_b = PRODUCTS[name]
    g = torch.Generator().manual_seed(1)
    a, a0 = _randn(shape_a, g), _randn(shape_a, g)
    b, b0 = _randn(shape_b, g), _randn(shape_b, g)
    weights = _randn(f(a, b).shape, g)  # a random linear read-out of the product
    pa = torch.cat([a, a0]).requires_grad_(True)
    pb = torch.cat([b, b0]).requires_grad_(True)
    (Product(f)(pa, pb) * torch.cat([weights, weights])).sum().backward()
    credit_a = (pa.grad[: len(a)] * (a - a0)).sum()
    credit_b = (pb.grad[: len(b)] * (b - b0)).sum()
    torch.testing.assert_close(credit_a, (weights * _shapley_of_a(f, a, a0, b, b0)).sum(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        credit_b, (weights * _shapley_of_a(lambda q, p: f(p, q), b, b0, a, a0)).sum(), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(credit_a + credit_b, (weights * (f(a, b) - f(a0, b0))).sum(), rtol=1e-12, atol=1e-12)
    if name == "mul":  # element by element, the closed forms Δa · (b + b0) / 2 and (a + a0) / 2 · Δb
        torch.testing.assert_close(pa.grad[: len(a)], weights * (b + b0) / 2, rtol=1e-12, atol=1e-12)
        summed = (weights * (a + a0) / 2).sum((2, 3), keepdim=True)  # b was broadcast over the positions
        torch.testing.assert_close(pb.grad[: len(b)], summed, rtol=1e-12, atol=1e-12)


def _secant(f, x, x0):
    d = x - x0
    return (f(x) - f(x0)) / d


def test_softmax_is_its_composition_with_the_rules_applied_by_hand():
    g = torch.Generator().manual_seed(2)
    x, x0 = _randn((1, 5), g), _randn((1, 5), g)
    rule = Softmax(lambda fn: Rescale(fn), Product)
    c = torch.maximum(x.max(), x0.max())
    e, e0 = torch.exp(x - c), torch.exp(x0 - c)
    s, s0 = e.sum(), e0.sum()
    r, r0 = 1 / s, 1 / s0
    m_e = _secant(torch.exp, x - c, x0 - c)[0]  # (5,)
    m_r = (r - r0) / (s - s0)
    # y_j = e_j r: Δy_j = Δe_j (r + r0)/2 + (e_j + e0_j)/2 Δr, Δe_i = m_e_i Δx_i, Δr = m_r Σ_i Δe_i.
    by_hand = torch.diag(m_e) * (r + r0) / 2 + ((e + e0)[0] / 2)[:, None] * m_r * m_e[None, :]
    for j in range(5):
        both = torch.cat([x, x0]).requires_grad_(True)
        rule(both, dim=-1)[0, j].backward()
        torch.testing.assert_close(both.grad[0], by_hand[j], rtol=1e-12, atol=1e-14)
        change = float(F.softmax(x, -1)[0, j] - F.softmax(x0, -1)[0, j])
        assert math.isclose(float((both.grad[0] * (x - x0)[0]).sum()), change, rel_tol=1e-11, abs_tol=1e-14)


def test_layer_norm_is_its_composition_with_the_rules_applied_by_hand():
    g = torch.Generator().manual_seed(3)
    n = 6
    x, x0 = _randn((1, n), g), _randn((1, n), g)
    weight, bias = _randn(n, g), _randn(n, g)
    norm = torch.nn.LayerNorm(n, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    rule = LayerNorm(lambda fn: Rescale(fn), Product, norm)
    centre = torch.eye(n, dtype=torch.float64) - 1.0 / n  # c = centre @ x
    c, c0 = x[0] @ centre.T, x0[0] @ centre.T
    m_sq = _secant(torch.square, c, c0)
    v, v0 = (c**2).mean() + 1e-5, (c0**2).mean() + 1e-5
    m_rs = (torch.rsqrt(v) - torch.rsqrt(v0)) / (v - v0)
    rs_mean = (torch.rsqrt(v) + torch.rsqrt(v0)) / 2
    c_mean = (c + c0) / 2
    # y = w * c * rsqrt(mean(c²) + eps) + b: Δy_j = w_j [Δc_j rs̄ + c̄_j m_rs Σ_k m_sq_k Δc_k / n].
    d_y_d_c = (
        torch.diag(torch.full((n,), float(rs_mean), dtype=torch.float64)) + c_mean[:, None] * m_rs * m_sq[None, :] / n
    )
    by_hand = weight[:, None] * (d_y_d_c @ centre)
    expected_change = (norm(x)[0] - norm(x0)[0]).detach()
    # The step-by-step composition, and the closed form of it that DeepLIFT runs.
    for fused, j in itertools.product((False, True), range(n)):
        rule.fused = fused
        both = torch.cat([x, x0]).requires_grad_(True)
        rule(both)[0, j].backward()
        torch.testing.assert_close(both.grad[0], by_hand[j], rtol=1e-11, atol=1e-13)
        assert math.isclose(float((both.grad[0] * (x - x0)[0]).sum()), float(expected_change[j]), rel_tol=1e-10,
                            abs_tol=1e-13)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 6))
def test_products_of_rescaled_activations_sum_to_their_change(seed, n):
    g = torch.Generator().manual_seed(seed)
    x, x0 = _randn((1, n), g), _randn((1, n), g)
    silu, sigmoid = Rescale(F.silu), Rescale(torch.sigmoid)
    times = Product(operator.mul)
    both = torch.cat([x, x0]).requires_grad_(True)
    out = times(silu(both), sigmoid(both)).sum(1)
    out[0].backward()
    change = (F.silu(x) * torch.sigmoid(x) - F.silu(x0) * torch.sigmoid(x0)).sum()
    assert math.isclose(float((both.grad[0] * (x - x0)[0]).sum()), float(change), rel_tol=1e-10, abs_tol=1e-12)


def test_a_reference_that_layer_norm_sees_as_constant_is_warned_about():
    from xai_bench import XaiBenchWarning, explain

    class Stem(torch.nn.Module):
        """A convolution without bias, then layer norm over channels: the zero image stays exactly zero."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, bias=False)
            self.norm = torch.nn.LayerNorm(8)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.norm(self.conv(x).permute(0, 2, 3, 1)).mean((1, 2)))

    torch.manual_seed(0)
    model = Stem().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with pytest.warns(XaiBenchWarning, match=r"layer norm module 'norm' \(LayerNorm\): the reference is constant"):
        explain(model, x, methods="deeplift", targets=[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = explain(model, x, methods={"deeplift": {"baseline": 0.5 * x[0].flip(-1)}}, targets=[0])
    assert float(abs(ds["deeplift_delta"]).max()) < 1e-12


def test_near_ties_take_the_derivative_only_where_the_function_does_not_pass_through_zero():
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    x0 = x - 1e-12  # closer than eps = 1e-10
    # sigmoid(0) = 1/2: the derivative at the midpoint.
    torch.testing.assert_close(
        _multipliers(Rescale(torch.sigmoid), x, x0),
        torch.sigmoid((x + x0) / 2) * (1 - torch.sigmoid((x + x0) / 2)),
        rtol=1e-14,
        atol=0,
    )
    # silu(0) = 0: the secant of the computed values, which m * Δx reproduces to the last bit.
    m = _multipliers(Rescale(F.silu), x, x0)
    torch.testing.assert_close(m, (F.silu(x) - F.silu(x0)) / (x - x0), rtol=1e-15, atol=0)
    # Exact ties still take the derivative; squares use x + x0 everywhere.
    tie = _multipliers(Rescale(F.silu), x, x.clone())
    probe = x.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(F.silu(probe).sum(), probe)
    torch.testing.assert_close(tie, slope, rtol=1e-14, atol=0)
    torch.testing.assert_close(_multipliers(Rescale(torch.square), x, x), 2 * x, rtol=0, atol=0)
