"""Deconvolution and GradientSHAP against captum, zennit and closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution as CaptumDeconvolution
from captum.attr import GradientShap as CaptumGradientShap
from torch import nn

from xai_bench import InvalidParameterError, explain
from xai_bench.attributors.gradient_shap import draw
from xai_bench.core.provenance import sample_key
from xai_bench.surgery import PLAIN, rewrite
from xai_bench.testing import LinearModel, tiny_cnn


def _captum(model, method, x, target, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces the hooks it sets
        return method(model).attribute(x.clone().requires_grad_(True), target=target, **kw).detach().numpy()


def _sequential_cnn():
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(5, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4),
    ).double().eval()  # fmt: skip


def test_deconvolution_matches_captum_on_every_relu_pattern(gen):
    """captum's hooks see ReLU modules only; on the plain view (every ReLU its own module) it is right."""
    model = tiny_cnn()
    x = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    ds = explain(model, x, targets=[1, 3], methods=["deconvolution"])
    plain, _ = rewrite(model, PLAIN)
    for column, target in enumerate((1, 3)):
        expected = _captum(plain, CaptumDeconvolution, x, target)
        np.testing.assert_allclose(ds["deconvolution"].values[:, column], expected, rtol=1e-12, atol=1e-14)


def test_deconvolution_matches_zennit(gen):
    from zennit.attribution import Gradient
    from zennit.composites import DeconvNet

    model = _sequential_cnn()
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    ds = explain(model, x, targets=[2], methods=["deconvolution"])
    with Gradient(model=model, composite=DeconvNet()) as attributor:
        _, expected = attributor(x, torch.eye(4, dtype=torch.float64)[[2, 2]])
    np.testing.assert_allclose(ds["deconvolution"].values[:, 0], expected.numpy(), rtol=1e-12, atol=1e-14)


def test_deconvolution_ignores_the_sign_of_the_relus_input():
    """One ReLU on a negative input: the gradient still passes (guided backprop would stop it)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    model = model.double().eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0]]))
        model[3].weight.copy_(torch.tensor([[2.0]]))
    x = torch.tensor([[[[-1.0, -2.0]]]], dtype=torch.float64)  # the ReLU's input is -3
    ds = explain(model, x, targets=[0], methods=["deconvolution", "guided_backprop"])
    np.testing.assert_array_equal(ds["deconvolution"].values[0, 0, 0, 0], [2.0, 2.0])
    np.testing.assert_array_equal(ds["guided_backprop"].values[0, 0, 0, 0], [0.0, 0.0])


def _reference_gradient_shap(model, x, target, *, n_samples, stdevs, refs, seed=0):
    """GradientSHAP by its definition, one draw at a time with plain autograd, from the same draws."""
    maps = torch.zeros_like(x)
    for i in range(len(x)):
        for d in range(n_samples):
            one = draw(seed, sample_key(i), d, len(refs), stdevs, tuple(x.shape[1:]), x.dtype)
            noisy = x[i] if one.noise is None else x[i] + one.noise
            diff = noisy - refs[one.reference]
            point = (refs[one.reference] + one.alpha * diff).unsqueeze(0).requires_grad_(True)
            (grad,) = torch.autograd.grad(model(point)[0, target], point)
            maps[i] += grad[0] * diff / n_samples
    return maps.numpy()


@pytest.mark.parametrize(("stdevs", "n_refs"), [(0.0, 1), (0.2, 1), (0.1, 3)])
def test_gradient_shap_is_its_definition_on_a_relu_network(gen, stdevs, n_refs):
    model = tiny_cnn()
    x = torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    refs = torch.rand(n_refs, 3, 12, 12, generator=gen, dtype=torch.float64)
    params = {"n_samples": 7, "stdevs": stdevs}
    params.update({"baselines": refs} if n_refs > 1 else {"baseline": refs[0]})
    ds = explain(model, x, targets=[2], methods={"gradient_shap": params}, passes=4)
    expected = _reference_gradient_shap(model, x, 2, n_samples=7, stdevs=stdevs, refs=refs)
    np.testing.assert_allclose(ds["gradient_shap"].values[:, 0], expected, rtol=1e-10, atol=1e-13)


def test_gradient_shap_of_a_linear_model_is_exact_whatever_the_draws(gen):
    """Without noise and with one reference the gradient is W[t] everywhere: maps are W[t] ⊙ (x - r)."""
    model = LinearModel((3, 4, 4), num_classes=3).double().eval()
    x = torch.rand(4, 3, 4, 4, generator=gen, dtype=torch.float64)
    ref = torch.rand(3, 4, 4, generator=gen, dtype=torch.float64)
    ds = explain(model, x, targets=[0, 2], methods={"gradient_shap": {"n_samples": 5, "baseline": ref}})
    weight = model.fc.weight.detach().view(3, 3, 4, 4)
    for column, target in enumerate((0, 2)):
        np.testing.assert_allclose(ds["gradient_shap"].values[:, column], (weight[target] * (x - ref)).numpy(), 1e-12)


def test_gradient_shap_agrees_with_captum_in_expectation(gen):
    """Different random draws, same estimator: the means agree, pixel by pixel, within their Monte Carlo error."""
    model = tiny_cnn()
    x = torch.rand(1, 3, 12, 12, generator=gen, dtype=torch.float64)
    refs = torch.rand(4, 3, 12, 12, generator=gen, dtype=torch.float64)
    n = 600
    ours = explain(model, x, targets=[1], methods={"gradient_shap": {"n_samples": n, "baselines": refs}})
    ours = ours["gradient_shap"].values[0, 0]
    # captum draws alpha and the references from numpy's global random state: seeded here, then put back.
    state = np.random.get_state()
    try:
        np.random.seed(0)
        theirs = _captum(model, CaptumGradientShap, x.expand(n, -1, -1, -1), 1, baselines=refs, n_samples=1)
    finally:
        np.random.set_state(state)
    # n independent draws of the same sample, one per row: their spread gives each estimate's error.
    error = 5 * theirs.std(0) / np.sqrt(n) * np.sqrt(2)
    assert (np.abs(ours - theirs.mean(0)) <= error + 1e-12).all()
    # ... and tight enough to tell: half the estimate, or the estimate of the next target, is refused.
    other = explain(model, x, targets=[2], methods={"gradient_shap": {"n_samples": n, "baselines": refs}})
    for wrong in (ours / 2, other["gradient_shap"].values[0, 0]):
        assert not (np.abs(wrong - theirs.mean(0)) <= error + 1e-12).all()


def test_gradient_shap_refuses_bad_parameters():
    with pytest.raises(InvalidParameterError, match="stdevs must be a finite number >= 0"):
        explain(tiny_cnn(), torch.rand(1, 3, 12, 12, dtype=torch.float64), targets=[0],
                methods={"gradient_shap": {"stdevs": -1}})  # fmt: skip
    with pytest.raises(InvalidParameterError, match="n_samples"):
        explain(tiny_cnn(), torch.rand(1, 3, 12, 12, dtype=torch.float64), targets=[0],
                methods={"gradient_shap": {"n_samples": 0}})  # fmt: skip
