"""Properties every correct attribution method has, checked on random models and inputs."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from xai_bench import Passes, explain
from xai_bench.testing import AdditiveModel, FunctionalReluMLP, LinearModel, tiny_cnn

seeds = st.integers(0, 2**16)
relu_styles = st.sampled_from(["shared_inplace", "functional", "method_inplace", "torch"])


def _rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@given(
    seed=seeds,
    styles=st.lists(relu_styles, min_size=1, max_size=4),
    width=st.integers(2, 8),
    n=st.integers(1, 4),
)
def test_deeplift_sums_to_delta_on_random_relu_nets(seed, styles, width, n):
    torch.manual_seed(seed)
    model = FunctionalReluMLP(3 * 4 * 4, [width] * len(styles), 3, styles).double().eval()
    x = _rand(seed, n, 3, 4, 4)
    baseline = _rand(seed + 1, 3, 4, 4)
    ds = explain(model, x, targets="all", methods={"deeplift": {"baseline": baseline}})
    with torch.no_grad():
        expected = (model(x) - model(baseline.unsqueeze(0))).numpy()
    np.testing.assert_allclose(ds["deeplift"].values.sum(axis=(2, 3, 4)), expected, atol=1e-10)
    assert np.abs(ds["deeplift_delta"].values).max() < 1e-10


class SmoothNet(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Linear(2 * 3 * 3, width)
        self.b = nn.Linear(width, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.flatten(1))))


@given(seed=seeds, width=st.integers(2, 6))
def test_integrated_gradients_is_complete(seed, width):
    torch.manual_seed(seed)
    model = SmoothNet(width).double().eval()
    x = _rand(seed, 2, 2, 3, 3)
    ds = explain(model, x, targets="all", methods={"integrated_gradients": {"n_steps": 64}})
    with torch.no_grad():
        expected = (model(x) - model(torch.zeros_like(x))).numpy()
    np.testing.assert_allclose(ds["integrated_gradients"].values.sum(axis=(2, 3, 4)), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ds["integrated_gradients_delta"].values, 0, atol=1e-6)


@given(seed=seeds, n=st.integers(1, 3), classes=st.integers(1, 4))
def test_gradient_methods_match_closed_forms_on_linear_models(seed, n, classes):
    torch.manual_seed(seed)
    model = LinearModel((1, 4, 4), classes).double().eval()
    x = _rand(seed, n, 1, 4, 4)
    ds = explain(model, x, targets="all", methods={"saliency": {"abs": False}, "input_x_gradient": {}})
    w = model.fc.weight.detach().view(classes, 1, 4, 4).numpy()
    np.testing.assert_allclose(ds["saliency"].values, np.broadcast_to(w, (n, *w.shape)), rtol=1e-12)
    np.testing.assert_allclose(ds["input_x_gradient"].values, w[None] * x.numpy()[:, None], rtol=1e-12)
    absolute = explain(model, x, targets="all", methods=["saliency"])["saliency"].values
    np.testing.assert_allclose(absolute, np.abs(ds["saliency"].values))


@given(seed=seeds, patch=st.sampled_from([1, 2]), blocks=st.integers(1, 3))
def test_occlusion_is_exact_on_additive_models(seed, patch, blocks):
    size = patch * blocks * 2
    weight = _rand(seed, 2, 1, size, size)
    model = AdditiveModel(weight).eval()
    x = _rand(seed + 1, 2, 1, size, size)
    ds = explain(model, x, targets="all", methods={"occlusion": {"window": patch, "stride": patch}})
    terms = (torch.tanh(x)[:, None] * weight[None]).numpy()  # (N, K, 1, H, W)
    # Each pixel gets the score drop of its window: the sum of the window's terms.
    pooled = terms.reshape(2, 2, 1, size // patch, patch, size // patch, patch).sum(axis=(4, 6))
    expected = np.repeat(np.repeat(pooled, patch, axis=3), patch, axis=4)
    np.testing.assert_allclose(ds["occlusion"].values, expected, atol=1e-12)


@given(seed=seeds)
def test_occlusion_is_zero_where_the_model_looks_nowhere(seed):
    weight = _rand(seed, 1, 1, 8, 8)
    weight[..., :, 4:] = 0  # the right half is ignored
    ds = explain(
        AdditiveModel(weight).eval(),
        _rand(seed, 2, 1, 8, 8),
        targets=0,
        methods={"occlusion": {"window": 2, "stride": 2}},
    )
    ignored = np.abs(ds["occlusion"].values[..., 4:]).max()
    seen = np.abs(ds["occlusion"].values[..., :4]).max()
    assert ignored < 1e-12 * max(seen, 1.0)  # float64 round-off of re-ordered sums, nothing more
    assert seen > 1e-3


@given(
    seed=seeds,
    batch_size=st.integers(1, 12),
    method=st.sampled_from(
        ["saliency", "input_x_gradient", "guided_backprop", "integrated_gradients", "deeplift", "occlusion"]
    ),
)
def test_results_do_not_depend_on_batch_size(seed, batch_size, method):
    params = {"integrated_gradients": {"n_steps": 5}, "occlusion": {"window": 4, "stride": 4}}.get(method, {})
    model = tiny_cnn(seed=seed % 7)
    x = _rand(seed, 3, 3, 8, 8)
    whole = explain(model, x, targets="all", methods={method: params})
    split = explain(model, x, targets="all", methods={method: params}, passes=batch_size)
    np.testing.assert_allclose(split[method].values, whole[method].values, rtol=1e-9, atol=1e-12)


@given(seed=seeds, targets=st.sampled_from(["all", "predicted", [1, 3]]))
def test_explain_is_deterministic(seed, targets):
    model = tiny_cnn(seed=seed % 5)
    x = _rand(seed, 2, 3, 8, 8)
    methods = {"saliency": {}, "deeplift": {}, "guided_backprop": {}, "integrated_gradients": {"n_steps": 4}}
    # A fixed budget: the default follows free memory, and the plan is recorded in attrs.
    a = explain(model, x, targets=targets, methods=methods, passes=Passes(memory_budget="1GiB"))
    b = explain(model, x, targets=targets, methods=methods, passes=Passes(memory_budget="1GiB"))
    import xarray as xr

    xr.testing.assert_identical(a, b)
