"""Precision where it is cheap: VarGrad's moments and the Riemann rules' path points, against
float64 two-pass and closed-form references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xai_bench import explain
from xai_bench.attributors.noise_tunnel import Smoothing, noise
from xai_bench.core.provenance import sample_key

SHAPE = (1, 6, 6)


class Quadratic(nn.Module):
    """f_k(x) = sum(w_k x + c x^2 / 2): its gradient w_k + c x follows the noise with slope c."""

    def __init__(self, dtype: torch.dtype, offset: float = 100.0, curvature: float = 1.0) -> None:
        super().__init__()
        w = torch.linspace(-1, 1, 36, dtype=torch.float64).view(SHAPE) + offset
        self.register_buffer("w", torch.stack([w, -w]).to(dtype))
        self.c = curvature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_class = x.unsqueeze(1) * self.w + 0.5 * self.c * x.unsqueeze(1) ** 2
        return per_class.flatten(2).sum(2)


def _copies_saliency(model: nn.Module, x: torch.Tensor, smoothing: Smoothing, target: int) -> torch.Tensor:
    """(N, S, C, H, W): each noisy copy's gradient, one copy at a time, as the method computes it."""
    maps = []
    for i in range(len(x)):
        rows = []
        for d in range(smoothing.samples):
            copy = (x[i] + noise(smoothing, sample_key(i), d, tuple(x.shape[1:]), x.dtype)).unsqueeze(0)
            copy.requires_grad_(True)
            (grad,) = torch.autograd.grad(model(copy)[0, target], copy)
            rows.append(grad[0])
        maps.append(torch.stack(rows))
    return torch.stack(maps)


@pytest.mark.parametrize("stdev", [0.01, 0.001])
def test_vargrad_of_float32_maps_equals_the_float64_two_pass_variance(stdev):
    model = Quadratic(torch.float32).eval()
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    smoothing = Smoothing(samples=8, stdev=stdev, kind="vargrad", seed=5)
    ds = explain(model, x, methods={"saliency": {"smooth": smoothing.as_dict()}}, targets=[0], passes=5)
    copies = _copies_saliency(model, x, smoothing, 0).double()
    expected = copies.var(dim=1, unbiased=False).numpy()  # two passes: the mean, then squares about it
    np.testing.assert_allclose(ds["saliency"].values[:, 0], expected, rtol=1e-5, atol=0)
    # The float32 one-pass formula the test guards against is wrong by far more than that here.
    naive = (copies.float() ** 2).mean(1) - copies.float().mean(1) ** 2
    assert np.abs(naive.numpy() - expected).max() > 0.1 * np.abs(expected).max()


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_riemann_path_points_are_float64_in_float64_runs(rule):
    # f(x) = sum(x^3 / 3): IG's map is (x - b) * sum_k w_k (b + a_k (x - b))^2, a closed form.
    class Cubic(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x**3 / 3).flatten(1).sum(1, keepdim=True)

    n = 7
    x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 1
    ds = explain(Cubic().eval(), x, methods={"integrated_gradients": {"n_steps": n, "method": rule}}, targets=[0])
    k = np.arange(n, dtype=np.float64)
    alpha, weight = {
        "riemann_left": (k / n, np.full(n, 1 / n)),
        "riemann_right": ((k + 1) / n, np.full(n, 1 / n)),
        "riemann_middle": ((k + 0.5) / n, np.full(n, 1 / n)),
        "riemann_trapezoid": (k / (n - 1), np.r_[0.5, np.ones(n - 2), 0.5] / (n - 1)),
    }[rule]
    xs = x.numpy()[:, None]
    expected = xs[:, 0] * ((weight[:, None, None, None] * (alpha[:, None, None, None] * xs) ** 2).sum(1))
    np.testing.assert_allclose(ds["integrated_gradients"].values[:, 0], expected, rtol=1e-14, atol=0)
