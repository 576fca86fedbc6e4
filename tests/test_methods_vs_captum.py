"""Where captum is correct, xai_bench's methods give captum's numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Occlusion, Saliency

from xai_bench import explain
from xai_bench.surgery import PLAIN, rewrite
from xai_bench.testing import tiny_cnn


@pytest.fixture
def case(gen):
    return tiny_cnn(), torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)


def _captum(model, method, x, target, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces the hooks it sets
        return method(model).attribute(x.clone().requires_grad_(True), target=target, **kw).detach().numpy()


@pytest.mark.parametrize(("window", "stride"), [(4, 4), (5, 3), (12, 1), (5, (2, 4))])
def test_occlusion_matches_captum_including_clipped_border_windows(case, window, stride):
    model, x = case
    ds = explain(model, x, targets=[1], methods={"occlusion": {"window": window, "stride": stride, "fill": 0.3}})
    wh, ww = (window, window)
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    expected = _captum(model, Occlusion, x, 1, sliding_window_shapes=(3, wh, ww), strides=(3, sh, sw), baselines=0.3)
    # captum casts occlusion maps to float32.
    np.testing.assert_allclose(ds["occlusion"].values[:, 0], expected, rtol=1e-5, atol=1e-7)


def test_gradient_methods_match_captum(case):
    model, x = case
    ds = explain(model, x, targets=[2], methods=["saliency", "input_x_gradient", "guided_backprop"])
    np.testing.assert_allclose(ds["saliency"].values[:, 0], _captum(model, Saliency, x, 2), rtol=1e-12)
    np.testing.assert_allclose(ds["input_x_gradient"].values[:, 0], _captum(model, InputXGradient, x, 2), rtol=1e-12)
    plain, _ = rewrite(model, PLAIN)
    np.testing.assert_allclose(ds["guided_backprop"].values[:, 0], _captum(plain, GuidedBackprop, x, 2), rtol=1e-12)


def test_integrated_gradients_matches_captum(case):
    model, x = case
    ds = explain(model, x, targets=[0], methods={"integrated_gradients": {"n_steps": 9, "baseline": 0.1}})
    expected = _captum(model, IntegratedGradients, x, 0, n_steps=9, baselines=0.1)
    # captum holds the quadrature weights in float32, so float64 results agree to about 1e-7.
    np.testing.assert_allclose(ds["integrated_gradients"].values[:, 0], expected, rtol=1e-6, atol=1e-12)
