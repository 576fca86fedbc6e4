"""Attribution to a layer: each method against captum's Layer* classes or a closed form, and layer maps through
stores, runs, metrics, pictures and the conformance suite."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from captum.attr import (
    Deconvolution,
    DeepLift,
    GuidedBackprop,
    InternalInfluence,
    LayerConductance,
    LayerDeepLift,
    LayerGradientXActivation,
    LayerIntegratedGradients,
)
from torch import nn

from xai_bench import (
    InvalidParameterError,
    Passes,
    Targets,
    XaiBenchWarning,
    evaluate,
    explain,
    open_maps,
    run,
    verify_store,
)
from xai_bench.storage.zarr_io import chunk_key
from xai_bench.surgery import PLAIN, rewrite
from xai_bench.testing import check_attributor, tiny_cnn
from xai_bench.testing.data import SyntheticImages
from xai_bench.testing.models import plain_cnn, randomised

#: conv1 and conv3 are followed by an in-place ReLU; bn feeds a residual sum (the input goes around it)
LAYERS = ["conv1", "bn", "conv3"]
TOL = 1e-9


@pytest.fixture
def case(gen):
    return tiny_cnn(), torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)


def _captum(attributor, x, target, **kw) -> np.ndarray:
    """``attributor.attribute`` (a captum attribution object) on a copy of ``x``, as numpy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces the hooks it sets
        out = attributor.attribute(x.clone().requires_grad_(True), target=target, **kw)
    if isinstance(out, tuple):
        return tuple(o.detach().numpy() for o in out)
    return out.detach().numpy()


def _close(ours: np.ndarray, theirs: np.ndarray, tol: float = TOL) -> None:
    """``ours`` equals ``theirs`` to ``tol`` of the largest value."""
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = max(float(np.abs(theirs).max()), 1e-300)
    worst = float(np.abs(ours - theirs).max()) / scale
    assert worst <= tol, f"off by {worst:.3g} of the largest value"


def _upper(model: nn.Sequential, k: int) -> nn.Sequential:
    """The modules after index ``k`` of a sequential model (the part above its layer ``str(k)``)."""
    return nn.Sequential(*list(model)[k + 1 :])


# --- against captum on the tiny CNN ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_gradient_and_gradient_x_activation_at_a_layer_match_captum(case, layer):
    model, x = case
    methods = {"saliency": {"layer": layer, "abs": False}, "input_x_gradient": {"layer": layer}}
    ds = explain(model, x, methods=methods, targets=[0, 3])
    module = model.get_submodule(layer)
    for column, target in enumerate([0, 3]):  # two targets share each forward pass
        grad = _captum(LayerGradientXActivation(model, module, multiply_by_inputs=False), x, target)
        _close(ds["saliency"].values[:, column], grad)
        _close(ds["input_x_gradient"].values[:, column], _captum(LayerGradientXActivation(model, module), x, target))
    unsigned = explain(model, x, methods={"saliency": {"layer": layer}}, targets=[3])["saliency"].values[:, 0]
    _close(unsigned, np.abs(_captum(LayerGradientXActivation(model, module, multiply_by_inputs=False), x, 3)))


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle"])
def test_layer_integrated_gradients_matches_captum(case, layer, rule):
    """captum holds IG's weights in float32: rules whose 8 weights and points are exact in float32 compare to 1e-9.
    Where an in-place ReLU follows the layer, captum's LayerIntegratedGradients raises (its hook hands the rest of
    the network the leaf it differentiates against), so it runs on the view with out-of-place ReLUs."""
    model, x = case
    params = {"layer": layer, "n_steps": 8, "method": rule, "baseline": 0.1}
    ours = explain(model, x, methods={"integrated_gradients": params}, targets=[1], passes=5)
    plain, _ = rewrite(model, PLAIN)
    kw = {"baselines": 0.1, "n_steps": 8, "method": rule}
    theirs = _captum(LayerIntegratedGradients(plain, plain.get_submodule(layer)), x, 1, **kw)
    _close(ours["integrated_gradients"].values[:, 0], theirs)
    if layer == "bn":
        on_the_model = _captum(LayerIntegratedGradients(model, model.bn), x, 1, **kw)
        _close(ours["integrated_gradients"].values[:, 0], on_the_model)
    else:
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad is being used in an in-place"):
            _captum(LayerIntegratedGradients(model, model.get_submodule(layer)), x, 1, **kw)


@pytest.mark.parametrize("layer", LAYERS)
def test_internal_influence_matches_captum(case, layer):
    model, x = case
    params = {"layer": layer, "n_steps": 8, "method": "riemann_middle", "baseline": 0.2}
    ours = explain(model, x, methods={"internal_influence": params}, targets=[0, 2], passes=4)
    module = model.get_submodule(layer)
    for column, target in enumerate([0, 2]):
        theirs = _captum(InternalInfluence(model, module), x, target, baselines=0.2, n_steps=8, method="riemann_middle")
        _close(ours["internal_influence"].values[:, column], theirs)


def test_internal_influence_of_a_baseline_set_is_the_mean_of_captums(case):
    model, x = case
    refs = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    params = {"layer": "conv3", "n_steps": 8, "method": "riemann_left", "baselines": refs}
    ours = explain(model, x, methods={"internal_influence": params}, targets=[2], passes=7)["internal_influence"]
    each = [
        _captum(InternalInfluence(model, model.conv3), x, 2, baselines=ref[None], n_steps=8, method="riemann_left")
        for ref in refs
    ]
    _close(ours.values[:, 0], np.mean(each, axis=0))


def test_layer_maps_of_a_baseline_set_are_the_mean_of_single_baseline_maps(case):
    """Each reference of a set has a path of its own, whose activations come from that reference (the pass holds
    pairs of several references); the maps and deltas are the means of the single-baseline ones."""
    model, x = case
    refs = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    path = {"layer": "conv1", "n_steps": 3}
    methods = {"integrated_gradients": path, "layer_conductance": path, "deeplift": {"layer": "conv1"}}
    both = explain(
        model, x, targets=[1, 2], passes=7, methods={m: {**p, "baselines": refs} for m, p in methods.items()}
    )
    single = [
        explain(model, x, targets=[1, 2], methods={m: {**p, "baseline": r} for m, p in methods.items()}) for r in refs
    ]
    for name in [*methods, *(f"{m}_delta" for m in methods)]:
        mean = np.mean([ds[name].values for ds in single], axis=0)
        np.testing.assert_allclose(both[name].values, mean, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_layer_conductance_and_its_delta_match_captum(case, layer, rule):
    model, x = case
    params = {"layer": layer, "n_steps": 8, "method": rule, "baseline": 0.1}
    ours = explain(model, x, methods={"layer_conductance": params}, targets=[3], passes=3)
    maps, delta = _captum(
        LayerConductance(model, model.get_submodule(layer)), x, 3, baselines=0.1, n_steps=8, method=rule,
        return_convergence_delta=True,
    )  # fmt: skip
    _close(ours["layer_conductance"].values[:, 0], maps)
    np.testing.assert_allclose(ours["layer_conductance_delta"].values[:, 0], delta, rtol=1e-9, atol=1e-12)


# --- DeepLIFT, guided backprop and deconvolution: where captum is exact, and where it is not ------------------------


@pytest.mark.parametrize("layer", ["0", "1", "2"])
def test_layer_deeplift_matches_captum_on_a_net_of_distinct_relus(layer, gen):
    model, x = plain_cnn(), torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    ours = explain(model, x, methods={"deeplift": {"layer": layer, "baseline": 0.1}}, targets=[0, 2])
    for column, target in enumerate([0, 2]):
        maps, delta = _captum(
            LayerDeepLift(model, model.get_submodule(layer)), x, target, baselines=0.1, return_convergence_delta=True
        )
        _close(ours["deeplift"].values[:, column], maps)
        with torch.no_grad():
            expected = (model(x) - model(torch.full_like(x, 0.1)))[:, target].numpy()
        np.testing.assert_allclose(ours["deeplift"].values[:, column].sum(axis=(1, 2, 3)), expected, rtol=1e-12)
        np.testing.assert_allclose(delta, 0, atol=1e-10)


def test_layer_deeplift_sums_exactly_where_captums_overlapping_max_pooling_rule_misses():
    """captum un-pools a max pooling with overlapping windows by writing each window's share to its maximum's
    position, so a position that is the maximum of two windows keeps one window's share: its layer maps miss
    f(x) - f(baseline), xai_bench's sum to it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.MaxPool2d(3, stride=1), nn.Flatten(), nn.Linear(27, 2)).double()
    model.eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = (model(x) - model(torch.full_like(x, 0.1)))[:, 1].numpy()
    ours = explain(model, x, methods={"deeplift": {"layer": "0", "baseline": 0.1}}, targets=[1])["deeplift"]
    np.testing.assert_allclose(ours.values[:, 0].sum(axis=(1, 2, 3)), expected, rtol=1e-12, atol=1e-14)
    theirs = _captum(LayerDeepLift(model, model[0]), x, 1, baselines=0.1)
    assert np.abs(theirs.sum(axis=(1, 2, 3)) - expected).max() > 1e-2 * np.abs(expected).max()


def test_layer_deeplift_sums_exactly_where_captum_passes_functional_relus_as_linear(case):
    """captum's DeepLIFT hooks modules only: after conv3 the tiny CNN has a functional ReLU, a functional max
    pooling and ``Tensor.relu_``, through which it passes plain gradients; xai_bench's rewritten view has a rule
    for each, and conv3 is a cut of the network, so its maps sum to f(x) - f(baseline) exactly."""
    model, x = case
    ours = explain(model, x, methods={"deeplift": {"layer": "conv3", "baseline": 0.1}}, targets=[2])["deeplift"]
    with torch.no_grad():
        expected = (model(x) - model(torch.full_like(x, 0.1)))[:, 2].numpy()
    np.testing.assert_allclose(ours.values[:, 0].sum(axis=(1, 2, 3)), expected, rtol=1e-12, atol=1e-14)
    theirs = _captum(LayerDeepLift(model, model.conv3), x, 2, baselines=0.1)
    assert np.abs(theirs.sum(axis=(1, 2, 3)) - expected).max() > 1e-3 * np.abs(expected).max()


class _AboveConv3(nn.Module):
    """The tiny CNN after ``conv3``, written out: its in-place ReLU, overlapping max pooling, ReLU and head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.fc = model.fc

    def forward(self, a):
        a = torch.relu(a)
        a = torch.nn.functional.max_pool2d(a, 2, 1).relu()
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(a, 1).flatten(1))


def test_layer_deeplift_equals_deeplift_of_the_network_above_the_layer(case):
    model, x = case
    ours = explain(model, x, methods={"deeplift": {"layer": "conv3", "baseline": 0.1}}, targets=[0, 1])["deeplift"]
    acts = {}
    handle = model.conv3.register_forward_hook(lambda m, a, out: acts.setdefault(len(acts), out.detach().clone()))
    with torch.no_grad():
        model(x), model(torch.full_like(x[:1], 0.1))
    handle.remove()
    above = explain(_AboveConv3(model).eval(), acts[0], methods={"deeplift": {"baseline": acts[1][0]}}, targets=[0, 1])
    _close(ours.values, above["deeplift"].values)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_guided_backprop_and_deconvolution_at_a_layer_equal_captums_on_the_network_above_it(layer, gen):
    """captum has no layer variant of either: its input variant, run on the modules above the layer at the layer's
    activation, is the reference (every ReLU there is a module of its own, where captum's rules are exact)."""
    model, x = plain_cnn(), torch.rand(3, 3, 12, 12, generator=gen, dtype=torch.float64)
    methods = {"guided_backprop": {"layer": str(layer)}, "deconvolution": {"layer": str(layer)}}
    ours = explain(model, x, methods=methods, targets=[1])
    with torch.no_grad():
        activation = model[: layer + 1](x)
    above = _upper(model, layer)
    _close(ours["guided_backprop"].values[:, 0], _captum(GuidedBackprop(above), activation, 1))
    _close(ours["deconvolution"].values[:, 0], _captum(Deconvolution(above), activation, 1))


# --- closed forms: an in-place operation after the layer, a module called twice ------------------------------------


def _leaky_case():
    """``Linear(LeakyReLU(conv(x)))`` with an in-place leaky ReLU after the 1 x 1 convolution ``"0"``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.LeakyReLU(0.1, inplace=True), nn.Flatten(), nn.Linear(12, 3))
    model = model.double().eval()
    x = torch.randn(4, 2, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, x


def _slope(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, 0.1))


def test_a_layer_followed_by_an_in_place_operation_closed_form():
    """The activation is the convolution's output z, as it returned it, and the gradient is taken against z, not
    against the leaky ReLU's output that overwrote it: saliency W ⊙ slope(z), input × gradient z ⊙ W ⊙ slope(z),
    internal influence sum_k w_k W ⊙ slope(z_k), DeepLIFT W ⊙ (leaky(z) - leaky(z_b)), IG at the layer
    sum_k w_k W ⊙ slope(z_b + a_k (z - z_b)) ⊙ (z - z_b), with the rule's points a_k and weights w_k."""
    model, x = _leaky_case()
    b = torch.full_like(x[:1], 0.3)
    params = {"layer": "0", "n_steps": 4, "method": "riemann_middle", "baseline": 0.3}
    ds = explain(
        model, x, targets=[1],
        methods={"saliency": {"layer": "0", "abs": False}, "input_x_gradient": {"layer": "0"},
                 "internal_influence": params, "integrated_gradients": params,
                 "deeplift": {"layer": "0", "baseline": 0.3}},
    )  # fmt: skip
    weight = model[3].weight.detach()[1].view(3, 2, 2)
    with torch.no_grad():
        z, zb = model[0](x), model[0](b)
    leaky = torch.nn.functional.leaky_relu
    points, weights = [1 / 8, 3 / 8, 5 / 8, 7 / 8], [1 / 4] * 4
    path = [zb + a * (z - zb) for a in points]
    x_path = [model[0](b + a * (x - b)).detach() for a in points]
    expected = {
        "saliency": weight * _slope(z),
        "input_x_gradient": z * weight * _slope(z),
        "internal_influence": sum(w * weight * _slope(zk) for w, zk in zip(weights, x_path, strict=True)),
        "integrated_gradients": sum(w * weight * _slope(zk) for w, zk in zip(weights, path, strict=True)) * (z - zb),
        "deeplift": weight * (leaky(z, 0.1) - leaky(zb, 0.1)),
    }
    for name, values in expected.items():
        _close(ds[name].values[:, 0], values.numpy(), tol=1e-12)
    # captum's gradient x activation copies the output in its hook too; its layer IG raises on the in-place ReLU.
    _close(ds["input_x_gradient"].values[:, 0], _captum(LayerGradientXActivation(model, model[0]), x, 1), tol=1e-12)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad is being used in an in-place"):
        _captum(LayerIntegratedGradients(model, model[0]), x, 1)


class _SharedReLU(nn.Module):
    """``fc(relu(b(relu(a(x)))))`` with one ReLU module at both call sites."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.relu, self.fc = nn.Conv2d(2, 3, 1), nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(self.relu(self.b(self.relu(self.a(x)))).flatten(1))


def test_a_module_called_twice_is_refused_where_captum_keeps_its_last_call():
    """captum's layer hooks keep what the last call returned: on a ReLU module used at two call sites its
    "layer" map is the second site's (activation r2 times W[t] where r2 > 0), and the first site is lost."""
    torch.manual_seed(0)
    model = _SharedReLU().double().eval()
    x = torch.randn(4, 2, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        second = model.relu(model.b(model.relu(model.a(x))))
    closed = second * model.fc.weight.detach()[1].view(3, 2, 2) * (second > 0)
    _close(_captum(LayerGradientXActivation(model, model.relu), x, 1), closed.numpy(), tol=1e-12)
    for method in ("input_x_gradient", "deeplift", "layer_conductance"):
        with pytest.raises(InvalidParameterError, match=r"layer 'relu' runs 2 times in one forward pass"):
            explain(model, x, methods={method: {"layer": "relu"}}, targets=[1])


# --- refusals --------------------------------------------------------------------------------------------------------


class _Odd(nn.Module):
    """A network with a module that returns a tuple and one that moves the batch off the first dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.split = _Split()
        self.swap = _Swap()
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        a, _ = self.split(x)
        return self.fc(self.swap(a).transpose(0, 1).flatten(1))


class _Split(nn.Module):
    def forward(self, x):
        return x, x


class _Swap(nn.Module):
    def forward(self, x):
        return x.transpose(0, 1)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "deeplift", "internal_influence"])
def test_an_unknown_layer_is_refused_with_close_matches(case, method):
    model, x = case
    refusal = r"the model has no layer 'conv4'\. Did you mean 'conv3', 'conv2', 'conv1'\?"
    with pytest.raises(InvalidParameterError, match=refusal):
        explain(model, x, methods={method: {"layer": "conv4"}}, targets=[0])


def test_layers_whose_output_is_not_one_batch_first_tensor_are_refused():
    model, x = _Odd().double().eval(), torch.rand(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match="layer 'split' returns a tuple, not one tensor"):
        explain(model, x, methods={"saliency": {"layer": "split"}}, targets=[0])
    with pytest.raises(InvalidParameterError, match=r"layer 'swap' returns a tensor of shape \(3, 2, 4, 4\) for a"):
        explain(model, x, methods={"input_x_gradient": {"layer": "swap"}}, targets=[0])


def test_bad_layer_parameters_are_refused_when_the_method_is_made(case):
    model, x = case
    for method in ("internal_influence", "layer_conductance"):
        with pytest.raises(InvalidParameterError, match=f"'{method}' needs the parameter 'layer'"):
            explain(model, x, methods=method, targets=[0])
    with pytest.raises(InvalidParameterError, match="layer must be a module name such as 'layer4'"):
        explain(model, x, methods={"saliency": {"layer": 3}}, targets=[0])
    with pytest.raises(InvalidParameterError, match="layer_conductance: method must be one of"):
        explain(model, x, methods={"layer_conductance": {"layer": "conv3", "method": "simpson"}}, targets=[0])


def test_a_layer_is_named_as_in_the_model_under_a_probability_head(case):
    model, x = case
    ds = explain(model, x, methods={"input_x_gradient": {"layer": "conv3"}}, targets=Targets([2], output="sigmoid"))
    head = nn.Sequential(model, nn.Sigmoid())
    _close(ds["input_x_gradient"].values[:, 0], _captum(LayerGradientXActivation(head, model.conv3), x, 2))
    assert ds["input_x_gradient"].attrs["layer"] == "conv3"


# --- stores, runs, metrics, pictures ---------------------------------------------------------------------------------


LAYER_AND_INPUT = {"saliency": {"layer": "conv3"}, "deeplift": {"layer": "conv1"}, "input_x_gradient": {}}


def test_explain_stores_layer_maps_with_their_own_dims_and_reopens_them(case, tmp_path):
    model, x = case
    ds = explain(model, x, methods=LAYER_AND_INPUT, targets=[0, 2], store=tmp_path / "maps.zarr")
    assert ds["saliency"].dims == ("sample", "target", "saliency_channel", "saliency_y", "saliency_x")
    assert ds["deeplift"].shape == (3, 2, 6, 12, 12) and ds["saliency"].shape == (3, 2, 6, 5, 5)
    assert ds["input_x_gradient"].dims == ("sample", "target", "channel", "y", "x")
    assert "layer" not in ds["input_x_gradient"].attrs
    assert verify_store(tmp_path / "maps.zarr").ok
    stored = open_maps(tmp_path / "maps.zarr", checksums=True).load()
    assert stored.xai.methods == ds.xai.methods == list(LAYER_AND_INPUT)  # in the order asked for
    assert {m: stored.xai.layer(m) for m in LAYER_AND_INPUT} == {"saliency": "conv3", "deeplift": "conv1",
                                                                 "input_x_gradient": None}  # fmt: skip
    for name in (*LAYER_AND_INPUT, "deeplift_delta", "score"):
        assert stored[name].dims == ds[name].dims
        np.testing.assert_array_equal(stored[name].values, ds[name].values)
    picked = stored.xai.select("saliency", 1, 2)
    assert picked.dims == ("saliency_channel", "saliency_y", "saliency_x")
    np.testing.assert_array_equal(picked.values, ds["saliency"].values[1, 1])


def test_per_sample_targets_keep_layer_maps_in_slots(case):
    model, x = case
    ds = explain(model, x, methods={"internal_influence": {"layer": "bn", "n_steps": 4}}, targets=[[1], [0, 3], []])
    dense = explain(model, x, methods={"internal_influence": {"layer": "bn", "n_steps": 4}}, targets=[0, 1, 3])
    var = ds["internal_influence"]
    assert var.dims[:2] == ("sample", "slot") and var.dims[2:] == dense["internal_influence"].dims[2:]
    np.testing.assert_allclose(ds.xai.select("internal_influence", 1, 3).values, dense["internal_influence"][1, 2])
    assert np.isnan(var.values[2]).all()


RUN_METHODS = {"saliency": {"layer": "conv3"}, "integrated_gradients": {"layer": "bn", "n_steps": 4}, "deeplift": {}}
RUN_ARGS = {"methods": RUN_METHODS, "targets": "all", "passes": Passes(batch_size=4, progress=False)}


def test_run_writes_verifies_and_resumes_layer_maps(tmp_path):
    data = SyntheticImages(5)
    store = tmp_path / "run.zarr"
    summary = run(tiny_cnn(), data, store=store, samples_per_block=2, **RUN_ARGS)
    assert (summary.computed, summary.skipped) == (5, 0)
    stored = open_maps(store).load()
    images = torch.stack([data[i]["image"] for i in range(5)])
    direct = explain(tiny_cnn(), images, sample_ids=data.sample_ids, **RUN_ARGS)
    for name in ("saliency", "integrated_gradients", "integrated_gradients_delta", "deeplift"):
        assert stored[name].dims == direct[name].dims
        np.testing.assert_allclose(stored[name].values, direct[name].values, rtol=1e-10, atol=1e-13)
    assert stored["integrated_gradients"].attrs["layer"] == "bn"
    assert run(tiny_cnn(), data, store=store, samples_per_block=2, **RUN_ARGS).computed == 0
    # A lost chunk of a layer map is found, and its block computed again to the same values.
    (store / "saliency" / chunk_key(3, 5)).unlink()
    assert verify_store(store).damaged == {data.sample_ids[3]: ["saliency"]}
    with pytest.warns(XaiBenchWarning, match="have missing or damaged chunks; recomputing them"):
        resumed = run(tiny_cnn(), data, store=store, samples_per_block=2, **RUN_ARGS)
    assert resumed.computed == 2
    xr.testing.assert_identical(open_maps(store).load(), stored)


def test_evaluate_skips_layer_maps_with_the_reason_and_scores_the_input_maps(case):
    model, x = case
    masks = torch.zeros(3, 1, 12, 12, dtype=torch.bool)
    masks[:, :, 2:7, 3:9] = True
    maps = explain(model, x, methods=LAYER_AND_INPUT, targets=[0, 2])
    scores = evaluate(maps, metrics="pointing_game", masks=masks)
    skipped = json.loads(scores.attrs["skipped"])
    assert set(skipped) == {"saliency_pointing_game", "deeplift_pointing_game"}
    assert "maps of layer 'conv3' (6 x 5 x 5 per pair), not of the input" in skipped["saliency_pointing_game"]
    alone = evaluate(maps[["input_x_gradient", "score"]], metrics="pointing_game", masks=masks)
    np.testing.assert_array_equal(scores["input_x_gradient_pointing_game"].values,
                                  alone["input_x_gradient_pointing_game"].values)  # fmt: skip


def test_pictures_draw_a_layer_map_as_its_channel_sum_at_the_layers_resolution(case, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xai_bench import report
    from xai_bench.viz import plot_maps

    model, x = case
    methods = {**LAYER_AND_INPUT, "internal_influence": {"layer": "fc", "n_steps": 2}}
    ds = explain(model, x, methods=methods, targets=[0, 2])
    fig = plot_maps(ds, samples=[0], target=2)
    drawn = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_title()}
    layer_image = drawn["saliency @ conv3"].get_images()[0].get_array()
    assert layer_image.shape[:2] == (5, 5)
    assert drawn["input x gradient"].get_images()[0].get_array().shape[:2] == (12, 12)
    assert "not (channels, height, width); not drawn" in drawn["internal influence @ fc"].texts[0].get_text()
    plt.close(fig)
    page = report({"maps": ds}, tmp_path / "report").read_text()
    assert "saliency @ conv3" in page and "internal_influence @ fc: 4, not drawn" in page


# --- the conformance suite on layer methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("saliency", {"layer": "conv3"}),
        ("deeplift", {"layer": "conv1"}),
        pytest.param("input_x_gradient", {"layer": "bn"}, marks=pytest.mark.slow),
        pytest.param("integrated_gradients", {"layer": "bn", "n_steps": 3}, marks=pytest.mark.slow),
        pytest.param("guided_backprop", {"layer": "conv3"}, marks=pytest.mark.slow),
        pytest.param("deconvolution", {"layer": "bn"}, marks=pytest.mark.slow),
        pytest.param("internal_influence", {"layer": "conv3", "n_steps": 3}, marks=pytest.mark.slow),
        pytest.param("layer_conductance", {"layer": "conv1", "n_steps": 3}, marks=pytest.mark.slow),
    ],
)
def test_layer_methods_pass_the_conformance_suite(method, params):
    check_attributor(method, params)


# --- ResNet18 ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    model = randomised(torchvision.models.resnet18(weights=None, num_classes=5)).double().eval()
    return model, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["layer2", "layer4"])
def test_layer_methods_match_captum_on_resnet18(resnet, layer):
    model, x = resnet
    path = {"n_steps": 8, "baseline": 0.1}
    methods = {
        "saliency": {"layer": layer, "abs": False},
        "input_x_gradient": {"layer": layer},
        "integrated_gradients": {"layer": layer, "method": "riemann_right", **path},
        "internal_influence": {"layer": layer, "method": "riemann_left", **path},
        "layer_conductance": {"layer": layer, "method": "gausslegendre", **path},
    }
    ours = explain(model, x, methods=methods, targets=[4])
    module = model.get_submodule(layer)
    kw = {"baselines": 0.1, "n_steps": 8}
    expected = {
        "saliency": _captum(LayerGradientXActivation(model, module, multiply_by_inputs=False), x, 4),
        "input_x_gradient": _captum(LayerGradientXActivation(model, module), x, 4),
        "integrated_gradients": _captum(LayerIntegratedGradients(model, module), x, 4, method="riemann_right", **kw),
        "internal_influence": _captum(InternalInfluence(model, module), x, 4, method="riemann_left", **kw),
        "layer_conductance": _captum(LayerConductance(model, module), x, 4, method="gausslegendre", **kw),
    }
    for name, theirs in expected.items():
        _close(ours[name].values[:, 0], theirs)


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["layer2", "layer4"])
def test_layer_deeplift_on_resnet18_equals_captums_deeplift_of_the_blocks_above(resnet, layer):
    """captum's LayerDeepLift keeps one input per ReLU module, and ResNet's blocks call theirs twice; its DeepLift
    of the blocks above the layer, on the view with a module per ReLU call (no max pooling there), is exact."""
    model, x = resnet
    ours = explain(model, x, methods={"deeplift": {"layer": layer, "baseline": 0.1}}, targets=[1, 4])
    names = ["layer1", "layer2", "layer3", "layer4"]
    above = nn.Sequential(*[model.get_submodule(n) for n in names[names.index(layer) + 1 :]], model.avgpool,
                          nn.Flatten(), model.fc).eval()  # fmt: skip
    acts = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: acts.setdefault(len(acts), out.clone()))
    with torch.no_grad():
        model(x), model(torch.full_like(x[:1], 0.1))
    handle.remove()
    plain, _ = rewrite(above, PLAIN)
    with torch.no_grad():
        expected = model(x) - model(torch.full_like(x, 0.1))
    for column, target in enumerate([1, 4]):
        theirs = _captum(DeepLift(plain), acts[0], target, baselines=acts[1])
        _close(ours["deeplift"].values[:, column], theirs)
        np.testing.assert_allclose(
            ours["deeplift"].values[:, column].sum(axis=(1, 2, 3)), expected[:, target].numpy(), rtol=1e-10
        )
