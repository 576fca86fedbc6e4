"""Attribution to a layer on random sequential networks: the method on the network above the layer, and completeness."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from xai_bench import explain

seeds = st.integers(0, 2**16)
ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu_inplace": lambda: nn.ReLU(inplace=True),
    "leaky_inplace": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}
#: the methods whose maps at a layer are their maps of the network above it, fed the layer's activation
SPLIT = {
    "saliency": {"abs": False},
    "input_x_gradient": {},
    "guided_backprop": {},
    "deconvolution": {},
    "deeplift": {},
    "integrated_gradients": {"n_steps": 5},
}


class _Copy(nn.Module):
    """Hands on a copy: the network above a layer may begin with an in-place activation, which must not
    rewrite the inputs it is explained for."""

    def forward(self, x):
        return x.clone()


def _network(seed: int, widths: list[int], activations: list[str]) -> nn.Sequential:
    """Convolutions, each followed by its activation, then a pooled linear head: (N, 2, 5, 5) -> (N, 3)."""
    torch.manual_seed(seed)
    modules: list[nn.Module] = []
    channels = 2
    for width, name in zip(widths, activations, strict=True):
        modules += [nn.Conv2d(channels, width, 3, padding=1), ACTIVATIONS[name]()]
        channels = width
    modules += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, 3)]
    return nn.Sequential(*modules).double().eval()


def _rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


networks = st.integers(1, 3).flatmap(
    lambda depth: st.tuples(
        st.lists(st.integers(1, 4), min_size=depth, max_size=depth),
        st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=depth, max_size=depth),
        st.integers(0, 2 * depth - 1),  # a convolution or an activation
    )
)


@given(seed=seeds, network=networks, n=st.integers(1, 3))
def test_a_layer_method_is_the_method_on_the_network_above_the_layer(seed, network, n):
    widths, activations, k = network
    model = _network(seed, widths, activations)
    x, baseline = _rand(seed, n, 2, 5, 5), _rand(seed + 1, 2, 5, 5)
    at_layer = {name: {**params, "layer": str(k)} for name, params in SPLIT.items()}
    for name in ("deeplift", "integrated_gradients"):
        at_layer[name]["baseline"] = baseline
    ours = explain(model, x, methods=at_layer, targets="all")
    with torch.no_grad():
        activation, reference = model[: k + 1](x), model[: k + 1](baseline[None])[0]
    above = nn.Sequential(_Copy(), *list(model)[k + 1 :]).eval()
    on_input = {name: dict(params) for name, params in SPLIT.items()}
    for name in ("deeplift", "integrated_gradients"):
        on_input[name]["baseline"] = reference
    theirs = explain(above, activation, methods=on_input, targets="all")
    for name in SPLIT:
        scale = np.abs(theirs[name].values).max() + 1e-300
        np.testing.assert_array_less(np.abs(ours[name].values - theirs[name].values), 1e-9 * scale + 1e-300, name)


@given(seed=seeds, network=networks, n=st.integers(1, 3))
def test_deeplift_at_a_layer_sums_to_the_change_of_the_output(seed, network, n):
    widths, activations, k = network
    model = _network(seed, widths, activations)
    x, baseline = _rand(seed, n, 2, 5, 5), _rand(seed + 1, 2, 5, 5)
    ds = explain(model, x, methods={"deeplift": {"layer": str(k), "baseline": baseline}}, targets="all")
    with torch.no_grad():
        expected = (model(x) - model(baseline[None])).numpy()
    np.testing.assert_allclose(ds["deeplift"].values.sum(axis=(2, 3, 4)), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds["deeplift_delta"].values, 0, atol=1e-12)


smooth_networks = st.integers(1, 3).flatmap(
    lambda depth: st.tuples(
        st.lists(st.integers(1, 4), min_size=depth, max_size=depth),
        st.lists(st.sampled_from(["tanh", "softplus"]), min_size=depth, max_size=depth),
        st.integers(0, 2 * depth - 1),
    )
)


@given(seed=seeds, network=smooth_networks, n=st.integers(1, 3))
def test_integrated_gradients_at_a_layer_sums_to_the_change_of_the_output(seed, network, n):
    """On smooth activations Gauss-Legendre's error falls fast with the steps: 32 reach the sum to 1e-9."""
    widths, activations, k = network
    model = _network(seed, widths, activations)
    x, baseline = _rand(seed, n, 2, 5, 5), _rand(seed + 1, 2, 5, 5)
    params = {"layer": str(k), "baseline": baseline, "n_steps": 32}
    ds = explain(model, x, methods={"integrated_gradients": params}, targets="all")
    with torch.no_grad():
        expected = (model(x) - model(baseline[None])).numpy()
    np.testing.assert_allclose(ds["integrated_gradients"].values.sum(axis=(2, 3, 4)), expected, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ds["integrated_gradients_delta"].values, 0, atol=1e-9)
