"""Properties of the perturbation methods over feature masks, on random models, masks and inputs."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from xai_bench import explain
from xai_bench.testing import AdditiveModel, FunctionalReluMLP

seeds = st.integers(0, 2**16)
relu_styles = st.sampled_from(["shared_inplace", "functional", "method_inplace", "torch"])
METHODS = ("feature_ablation", "shapley_sampling", "kernel_shap", "lime")
SMALL = {
    "feature_ablation": {},
    "shapley_sampling": {"n_samples": 2},
    "kernel_shap": {"n_samples": 12},
    "lime": {"n_samples": 12, "alpha": 0.0},
}


def _rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _labels(seed: int, h: int, w: int, features: int) -> torch.Tensor:
    """A random label mask (H, W) with up to ``features`` distinct, non-contiguous labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, features, (h, w), generator=g) * 5 - 3


def _relu_net(seed: int, styles: list[str], width: int, shape: tuple[int, int, int]) -> FunctionalReluMLP:
    torch.manual_seed(seed)
    return FunctionalReluMLP(math.prod(shape), [width] * len(styles), 3, styles).double().eval()


@given(seed=seeds, cell=st.integers(1, 7), baseline=st.floats(-1, 1), n=st.integers(1, 3))
def test_feature_ablation_of_an_additive_model_is_its_per_feature_terms(seed, cell, baseline, n):
    weight = _rand(seed, 2, 2, 6, 7)
    model = AdditiveModel(weight).double().eval()
    x = _rand(seed + 1, n, 2, 6, 7)
    params = {"cell": cell, "baseline": baseline}
    ds = explain(model, x, targets="all", methods={"feature_ablation": params})
    # Removing a cell replaces its pixels' terms w * tanh(x) by w * tanh(baseline), and nothing else.
    rows, cols = np.arange(6) // cell, np.arange(7) // cell
    labels = torch.from_numpy(rows[:, None] * math.ceil(7 / cell) + cols[None, :]).flatten()
    terms = (weight[None] * (torch.tanh(x) - math.tanh(baseline))[:, None]).sum(2).flatten(2)  # (N, K, pixels)
    per_cell = torch.zeros(n, 2, int(labels.max()) + 1, dtype=torch.float64).index_add_(2, labels, terms)
    expected = per_cell[:, :, labels].view(n, 2, 1, 6, 7).expand(-1, -1, 2, -1, -1)
    np.testing.assert_allclose(ds["feature_ablation"].values, expected.numpy(), rtol=1e-9, atol=1e-12)


@given(
    seed=seeds,
    styles=st.lists(relu_styles, min_size=1, max_size=3),
    features=st.integers(1, 6),
    n_samples=st.integers(1, 6),
    baseline=st.floats(-1, 1),
)
def test_shapley_sampling_and_kernel_shap_add_up_to_the_score_difference(seed, styles, features, n_samples, baseline):
    model = _relu_net(seed, styles, 5, (2, 5, 5))
    x = _rand(seed, 2, 2, 5, 5)
    labels = _labels(seed, 5, 5, features)
    methods = {
        "shapley_sampling": {"features": labels, "n_samples": n_samples, "baseline": baseline},
        "kernel_shap": {"features": labels, "n_samples": n_samples + 1, "baseline": baseline},
    }
    ds = explain(model, x, targets="all", methods=methods)
    with torch.no_grad():
        expected = (model(x) - model(torch.full_like(x, baseline))).numpy()
    first = np.unique(labels.flatten().numpy(), return_index=True)[1]  # a pixel of each feature
    for method in methods:
        values = ds[method].values[:, :, 0].reshape(2, 3, -1)[:, :, first]
        # Efficiency: the features' values add up to f(x) - f(all removed), for any number of draws.
        np.testing.assert_allclose(values.sum(2), expected, rtol=1e-9, atol=1e-11)


@given(
    seed=seeds,
    method=st.sampled_from(METHODS),
    features=st.integers(1, 8),
    per_sample=st.booleans(),
)
def test_maps_are_constant_within_each_feature_and_channel_free(seed, method, features, per_sample):
    model = _relu_net(seed, ["torch", "functional"], 4, (3, 6, 6))
    x = _rand(seed, 2, 3, 6, 6)
    labels = torch.stack([_labels(seed, 6, 6, features), _labels(seed + 1, 6, 6, features)])
    mask = labels if per_sample else labels[0]
    maps = explain(model, x, targets=[0, 2], methods={method: {**SMALL[method], "features": mask}})[method].values
    for i in range(2):
        own = labels[i if per_sample else 0].numpy()
        np.testing.assert_array_equal(maps[i], np.broadcast_to(maps[i, :, :1], maps[i].shape))  # every channel
        for label in np.unique(own):
            values = maps[i][:, :, own == label]
            np.testing.assert_array_equal(values, np.broadcast_to(values[..., :1], values.shape))
