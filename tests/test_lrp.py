"""LRP against zennit (float64, the same composites and canonizers) and against closed forms where the
two differ: sums of branches, batch norms no layer precedes, zennit's merged batch norm."""

from __future__ import annotations

import itertools
import math
import operator
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from zennit.attribution import Gradient
from zennit.canonizers import NamedMergeBatchNorm, SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    LayerMapComposite,
    MixedComposite,
    NameMapComposite,
    layer_map_base,
)
from zennit.core import Hook
from zennit.layer import Sum
from zennit.rules import AlphaBeta as ZennitAlphaBeta
from zennit.rules import Epsilon as ZennitEpsilon
from zennit.rules import Gamma as ZennitGamma
from zennit.rules import Pass as ZennitPass
from zennit.rules import WSquare as ZennitWSquare
from zennit.rules import ZBox as ZennitZBox
from zennit.rules import ZPlus as ZennitZPlus
from zennit.types import Convolution

from xai_bench import InvalidParameterError, SurgeryError, Targets, explain
from xai_bench.attributors.base import Batch
from xai_bench.attributors.lrp import LRP, AlphaBeta, WSquare
from xai_bench.testing import model_state, randomised
from xai_bench.testing.conformance import assert_model_unchanged
from xai_bench.testing.models import ProductModel

EPSILON = 1e-6  # zennit's default, and xai_bench's
LOW, HIGH = -2.5, 3.0  # z-box bounds around the standard normal test images


def exact_batch_norms(model: nn.Module) -> nn.Module:
    """Set every batch norm's ``eps`` to 0, in place: zennit merges a batch norm into the layer before it
    and leaves the norm computing ``x / sqrt(1 + eps)``, not ``x``, which moves its outputs by ``eps / 2``
    per merged norm (:func:`test_zennits_merged_batch_norm_scales_the_output_and_xai_benchs_does_not`).
    With ``eps = 0`` both compute the model, and the comparisons are exact."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 0.0
    return model


def ours(model: nn.Module, x: torch.Tensor, targets: list[int], **params) -> torch.Tensor:
    """xai_bench's maps (N, T, C, H, W)."""
    ds = explain(model, x, methods={"lrp": params}, targets=targets)
    return torch.from_numpy(ds["lrp"].values)


def zennit_maps(model: nn.Module, x: torch.Tensor, targets: list[int], composite) -> torch.Tensor:
    """zennit's maps (N, T, C, H, W), with the target's score as the relevance at the top."""
    maps = []
    with Gradient(model=model, composite=composite) as attributor:
        for t in targets:
            _, relevance = attributor(x.clone(), lambda out, t=t: out * F.one_hot(torch.tensor(t), out.shape[1]))
            maps.append(relevance)
    return torch.stack(maps, 1)


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-10) -> None:
    scale = float(b.abs().max())
    assert scale > 0
    worst = float((a - b).abs().max())
    assert worst <= rtol * scale, f"maps differ by {worst:.3g}, {worst / scale:.3g} of their largest value"


def small_cnn(batch_norm: bool = True) -> nn.Module:
    """A VGG-like CNN with named parts (``features.0``, ``classifier.*``), batch norms after its convolutions."""
    norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        features=nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), norm(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), norm(8), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 8, 1), nn.ReLU(),
        ),
        flatten=nn.Flatten(),
        classifier=nn.Sequential(nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 4)),
    ))  # fmt: skip
    return exact_batch_norms(randomised(model)).double().eval()


def images(n: int = 3, size: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def zennit_epsilon(canonizers=None, stabilizer: float = EPSILON, epsilon: float = EPSILON) -> LayerMapComposite:
    """Epsilon everywhere, zennit's base treatments for the rest (zennit names no such composite)."""
    layer_map = [
        *layer_map_base(stabilizer),
        (Convolution, ZennitEpsilon(epsilon)),
        (nn.Linear, ZennitEpsilon(epsilon)),
    ]
    return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


BOUNDS = {
    "low": torch.full((3, 1, 1), LOW, dtype=torch.float64),
    "high": torch.full((3, 1, 1), HIGH, dtype=torch.float64),
}
COMPOSITES = {
    "epsilon_plus_flat": ({}, lambda c: EpsilonPlusFlat(canonizers=c)),
    "epsilon_gamma_box": (BOUNDS, lambda c: EpsilonGammaBox(low=BOUNDS["low"][None], high=BOUNDS["high"][None],
                                                             canonizers=c)),
    "epsilon_alpha2_beta1": ({}, lambda c: EpsilonAlpha2Beta1(canonizers=c)),
    "epsilon": ({}, lambda c: zennit_epsilon(c)),
}  # fmt: skip


@pytest.mark.parametrize("composite", sorted(COMPOSITES))
def test_each_composite_matches_zennit_on_a_cnn_with_batch_norms(composite):
    params, theirs = COMPOSITES[composite]
    model, x = small_cnn(), images()  # inputs of both signs: the x⁻ terms of zplus, alpha-beta and gamma count
    expected = zennit_maps(model, x, [1, 3], theirs([SequentialMergeBatchNorm()]))
    got = ours(model, x, [1, 3], composite=composite, **params)
    assert_close(got, expected)


def test_zennits_merged_batch_norm_scales_the_output_and_xai_benchs_does_not():
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 10 * 10, 2, bias=False)]
    model = randomised(nn.Sequential(*layers)).double().eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
        canonizer = SequentialMergeBatchNorm()
        handles = canonizer.apply(model)
        try:
            merged = model(x)
        finally:
            for handle in handles:
                handle.remove()
    # The merged norm is left as (x - 0) / sqrt(1 + eps): the linear model's output shrinks by that factor.
    torch.testing.assert_close(merged, expected / math.sqrt(1 + model[1].eps), rtol=1e-12, atol=0)
    view = LRP().prepare(model, x[:1]).model
    with torch.no_grad():
        torch.testing.assert_close(view(x), expected, rtol=0, atol=0)
    assert "batch norms merged into the Conv or Linear layer before them: 1" in LRP().prepare(model, x).surgery


def _matching(model: nn.Module, pattern: str) -> tuple[str, ...]:
    return tuple(n for n, m in model.named_modules() if n.startswith(pattern) and isinstance(m, nn.Linear))


USER_MAPS = {
    "the task's example": (
        {"features.0": "zbox", nn.Conv2d: "gamma", "classifier.*": "epsilon"},
        lambda m: [NameMapComposite([(("features.0",), ZennitZBox(LOW, HIGH)),
                                     (_matching(m, "classifier."), ZennitEpsilon(EPSILON))]),
                   LayerMapComposite([(nn.Conv2d, ZennitGamma(0.25))])],
    ),
    "rule objects by name": (
        {"features.4": AlphaBeta(alpha=1.0, beta=0.0), "features.0": WSquare(), "classifier.2": "zplus"},
        lambda m: [NameMapComposite([(("features.4",), ZennitAlphaBeta(alpha=1.0, beta=0.0)),
                                     (("features.0",), ZennitWSquare()),
                                     (("classifier.2",), ZennitZPlus())])],
    ),
    "the gradient for average pooling": (
        {nn.AvgPool2d: "gradient"},
        lambda m: [LayerMapComposite([(nn.AvgPool2d, Hook())])],  # a bare zennit hook leaves the gradient
    ),
    "a type over the input layer's rule": (
        {nn.Conv2d: "alpha_beta"},
        lambda m: [LayerMapComposite([(nn.Conv2d, ZennitAlphaBeta(alpha=2.0, beta=1.0))])],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(USER_MAPS))
def test_a_user_rule_map_overrides_the_composite_where_it_matches(case):
    rules, overrides = USER_MAPS[case]
    model, x = small_cnn(), images()
    # zennit's equivalent: the user's entries tried first, the composite where none matches.
    composite = MixedComposite([*overrides(model), EpsilonPlusFlat()], canonizers=[SequentialMergeBatchNorm()])
    expected = zennit_maps(model, x, [0, 2], composite)
    params = {"low": LOW, "high": HIGH} if "zbox" in rules.values() else {}
    got = ours(model, x, [0, 2], rules=rules, **params)
    assert_close(got, expected)
    assert not torch.allclose(got, ours(model, x, [0, 2]))  # the map changed the maps


class TwoBranches(nn.Module):
    """``head(a(x) + b(x))``: two linear branches summed, no biases (inputs (N, 1, 2, 2))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b, self.head = (
            nn.Linear(4, 3, bias=False),
            nn.Linear(4, 3, bias=False),
            nn.Linear(3, 2, bias=False),
        )

    def forward(self, x):
        x = x.flatten(1)
        return self.head(self.a(x) + self.b(x))


def test_a_sum_of_two_branches_shares_relevance_by_the_norm_rule_where_zennit_counts_it_twice():
    model = TwoBranches().double().eval()
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.5
    tiny = 1e-12
    got = ours(model, x, [1], composite="epsilon", epsilon=tiny, stabilizer=tiny)[:, 0].flatten(1)
    flat = x.flatten(1)
    with torch.no_grad():
        a, b = model.a(flat), model.b(flat)
        out = model.head(a + b)[:, 1]
    v = model.head.weight[1].detach()  # the head's weights of the target
    weight_a, weight_b = model.a.weight.detach(), model.b.weight.detach()
    # By hand: the head gives z_j v_j to the sum; the norm rule a_j v_j and b_j v_j to the branches;
    # each branch's epsilon rule spreads them back: x ⊙ (Aᵀ v + Bᵀ v), input times gradient.
    by_hand = flat * (v @ (weight_a + weight_b))
    torch.testing.assert_close(got, by_hand, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(got.sum(1), out, rtol=1e-9, atol=0)  # conserved
    # zennit lets the gradient through the addition: both branches get all of z_j v_j.
    theirs = zennit_maps(model, x, [1], zennit_epsilon(stabilizer=tiny, epsilon=tiny))[:, 0].flatten(1)
    z = a + b
    twice = flat * ((z / a * v) @ weight_a + (z / b * v) @ weight_b)
    torch.testing.assert_close(theirs, twice, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(theirs.sum(1), 2 * out, rtol=1e-9, atol=0)


class NormAfterConcatenation(nn.Module):
    """``head(norm(cat(a(x), b(x))))``: a batch norm no single layer precedes (DenseNet's ``norm1``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.a, self.b = nn.Linear(4, 2, bias=False), nn.Linear(4, 3, bias=False)
        self.norm = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 2, bias=False)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(self.norm(torch.cat([self.a(x), self.b(x)], 1)))


def test_a_batch_norm_after_a_concatenation_is_an_affine_layer_with_the_epsilon_rule():
    model = randomised(NormAfterConcatenation(), seed=6).double().eval()
    x = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.5
    tiny = 1e-12
    ds = explain(model, x, methods={"lrp": {"composite": "epsilon", "epsilon": tiny, "stabilizer": tiny}}, targets=[0])
    got = torch.from_numpy(ds["lrp"].values[:, 0]).flatten(1)
    assert "batch norms on their own (affine layers) with epsilon(epsilon=1e-12): 1" in ds["lrp"].attrs["surgery"]
    flat = x.flatten(1)
    norm = model.norm
    with torch.no_grad():
        c = torch.cat([model.a(flat), model.b(flat)], 1)
        scale = norm.weight / (norm.running_var + norm.eps).sqrt()
        shift = norm.bias - norm.running_mean * scale
        y = c * scale + shift
        out = model.head(y)[:, 0]
    v = model.head.weight[0].detach()
    weights = torch.cat([model.a.weight, model.b.weight]).detach()  # c = weights @ x
    # By hand: the head gives y_j v_j to the norm's outputs; the norm, an affine layer under the epsilon
    # rule, gives c_j scale_j v_j to its inputs (its shift keeps the rest, as a bias does); the branches
    # spread that back: x ⊙ weightsᵀ (scale ⊙ v).
    by_hand = flat * ((scale * v) @ weights)
    torch.testing.assert_close(got, by_hand, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(got.sum(1), out - (shift * v).sum(), rtol=1e-9, atol=1e-15)
    # zennit passes relevance through a batch norm it has not merged: its inputs get y_j v_j, the shift's too.
    theirs = zennit_maps(model, x, [0], zennit_epsilon(stabilizer=tiny, epsilon=tiny))[:, 0].flatten(1)
    torch.testing.assert_close(theirs, flat * ((y / c * v) @ weights), rtol=1e-9, atol=1e-15)
    assert float((theirs - got).abs().max()) > 1e-3 * float(got.abs().max())


def test_timms_functional_batch_norm_is_merged_as_a_module_is():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    block = randomised(nn.Sequential(timm.layers.ConvNormAct(3, 5, 3), nn.Flatten(), nn.Linear(5 * 12 * 12, 3)))
    block = block.double().eval()
    conv_norm_act = block[0]
    plain = nn.Sequential(conv_norm_act.conv, nn.BatchNorm2d(5, eps=conv_norm_act.bn.eps), nn.ReLU(), nn.Flatten(),
                          block[2]).double().eval()  # fmt: skip
    plain[1].load_state_dict(conv_norm_act.bn.state_dict())
    x = images(size=12)
    ds = explain(block, x, methods="lrp", targets=[0, 2])
    assert "batch norms merged into the Conv or Linear layer before them: 1" in ds["lrp"].attrs["surgery"]
    np.testing.assert_allclose(ds["lrp"].values, explain(plain, x, methods="lrp", targets=[0, 2])["lrp"].values,
                               rtol=1e-12, atol=1e-15)  # fmt: skip


def test_a_sigmoid_output_passes_relevance_and_maps_sum_to_the_probability():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    model = randomised(model).double().eval()
    x = images().abs()
    ds = explain(
        model, x, methods={"lrp": {"composite": "epsilon", "epsilon": 1e-12}}, targets=Targets([1], output="sigmoid")
    )
    with torch.no_grad():
        probability = torch.sigmoid(model(x))[:, 1].numpy()
    np.testing.assert_allclose(ds["lrp"].values.sum(axis=(1, 2, 3, 4)), probability, rtol=1e-9)


def test_every_target_of_a_pass_shares_its_forward_pass_and_gets_zennits_map():
    model, x = small_cnn(), images()
    method = LRP()
    view = method.prepare(model, x[:1]).model
    calls = []
    handle = view.register_forward_pre_hook(lambda module, args: calls.append(1))
    targets = torch.tensor([[0, 1, 2, 3]] * 3)
    try:
        result = method.attribute(view, Batch(x, targets, torch.ones(3, 4, dtype=torch.bool), torch.arange(3),
                                              torch.zeros(3, dtype=torch.long)))  # fmt: skip
    finally:
        handle.remove()
    assert len(calls) == 1
    expected = zennit_maps(model, x, [0, 1, 2, 3], EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]))
    assert_close(result.maps, expected)
    with torch.no_grad():
        torch.testing.assert_close(result.outputs, model(x), rtol=0, atol=0)


def test_the_view_computes_the_models_output_follows_its_weights_and_leaves_it_alone():
    model, x = small_cnn(), images()
    before = model_state(model)
    view = LRP(composite="epsilon_alpha2_beta1").prepare(model, x[:1]).model
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x), rtol=0, atol=0)
        assert_model_unchanged(before, model)
        model.features[1].running_mean.add_(0.5)  # the merged weights are read from the model at each pass
        model.features[0].weight.mul_(1.5)
        torch.testing.assert_close(view(x), model(x), rtol=0, atol=0)
    changed = zennit_maps(model, x, [1], EpsilonAlpha2Beta1(canonizers=[SequentialMergeBatchNorm()]))
    assert_close(ours(model, x, [1], composite="epsilon_alpha2_beta1"), changed)


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.norm, self.head = nn.Linear(12, 6), nn.LayerNorm(6), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.norm(self.fc(x.flatten(1))))


class WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.head = nn.Linear(2, 4), nn.Linear(2, 4), nn.Linear(2, 4), nn.Linear(4, 2)

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)  # (N, 6, 2)
        mixed = F.scaled_dot_product_attention(self.q(tokens), self.k(tokens), self.v(tokens))
        return self.head(mixed.mean(1))


class WithFunctionalLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 12))

    def forward(self, x):
        return F.linear(x.flatten(1), self.weight)


REFUSED = {
    "a product of activations": (ProductModel, (3, 8, 8), r"operator\.mul\(\).*: a product of two activations"),
    "layer norm": (WithLayerNorm, (2, 2, 3), r"module 'norm' \(LayerNorm\): layer norm"),
    "attention": (WithAttention, (2, 2, 3), r"scaled_dot_product_attention\(\).*: attention"),
    "a functional linear layer": (WithFunctionalLinear, (2, 2, 3), r"linear\(\).*: a functional linear layer"),
    "batch statistics": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(), nn.Linear(24, 2)
        ),
        (2, 2, 3),
        r"module '1' \(BatchNorm2d\): a batch norm without running statistics",
    ),
}


# The batch-statistics case is warned about by the engine before LRP refuses it.
@pytest.mark.filterwarnings("ignore:'1'. batch norm without running statistics:xai_bench.core.errors.XaiBenchWarning")
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_operations_without_a_rule_are_refused_naming_the_call_site(case):
    factory, shape, where = REFUSED[case]
    torch.manual_seed(0)
    model = factory().double().eval()
    x = torch.rand(2, *shape, dtype=torch.float64)
    with pytest.raises(SurgeryError, match=rf"(?s)Cannot apply LRP to {type(model).__name__}.*{where}"):
        explain(model, x, methods="lrp", targets=[0])


def test_a_softmax_output_is_refused():
    model, x = small_cnn(), images()
    with pytest.raises(SurgeryError, match=r"(?s)no LRP rule.*softmax"):
        explain(model, x, methods="lrp", targets=Targets([0], output="softmax"))


BAD = {
    "unknown composite": ({"composite": "epsilon_plus"}, r"must be one of .*Did you mean 'epsilon_plus_flat'"),
    "negative epsilon": ({"epsilon": -1e-6}, r"epsilon must be a finite number >= 0"),
    "z-box without bounds": ({"composite": "epsilon_gamma_box"}, r"needs low= and high="),
    "bounds without a z-box": ({"low": 0.0, "high": 1.0}, r"low= and high= bound the z-box rule"),
    "low above high": ({"composite": "epsilon_gamma_box", "low": 1.0, "high": 0.0}, r"low must not exceed high"),
    "rules not a map": ({"rules": ["features.0"]}, r"rules must be a dict"),
    "unknown rule name": ({"rules": {"features.0": "z_plus"}}, r"must be a rule name .* Did you mean 'zplus'"),
    "a key of another kind": ({"rules": {0: "zplus"}}, r"a rules key must be a module name"),
    "alpha - beta is not 1": (None, r"alpha - beta must be 1"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_parameters_are_refused_at_construction(case):
    params, message = BAD[case]
    with pytest.raises(InvalidParameterError, match=message):
        LRP(**params) if params is not None else AlphaBeta(alpha=2.0, beta=2.0)  # a rule object checks itself


def test_a_rule_map_naming_no_module_or_a_rule_that_fits_none_of_its_modules_is_refused():
    model, x = small_cnn(), images()
    with pytest.raises(InvalidParameterError, match=r"rules names 'feature\.0'.*Did you mean 'features\.0'"):
        explain(model, x, methods={"lrp": {"rules": {"feature.0": "flat"}}}, targets=[0])
    with pytest.raises(InvalidParameterError, match=r"rules\['features\.2'\] is 'zplus', which fits none"):
        explain(model, x, methods={"lrp": {"rules": {"features.2": "zplus"}}}, targets=[0])  # a ReLU
    with pytest.raises(InvalidParameterError, match=r"rules\['features\.1'\] matches only modules that carry no rule"):
        explain(model, x, methods={"lrp": {"rules": {"features.1": "zplus"}}}, targets=[0])  # a merged norm
    # A pattern over modules of several kinds applies where its rule fits.
    got = ours(model, x, [0], rules={"features.*": "gamma"})
    expected = zennit_maps(
        model,
        x,
        [0],
        MixedComposite(
            [LayerMapComposite([(nn.Conv2d, ZennitGamma(0.25))]), EpsilonPlusFlat()],
            canonizers=[SequentialMergeBatchNorm()],
        ),
    )
    assert_close(got, expected)


# -- the study's architectures --------------------------------------------------------------------------------


class _Scale(nn.Module):
    """A constant factor as a module, for zennit's Pass rule (xai_bench passes relevance through it)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _stacked_sum(a, b):
    return torch.stack([a, b], dim=-1)


def zennit_ready(model: nn.Module) -> tuple[fx.GraphModule, list[tuple[tuple[str], str]], tuple[str, ...]]:
    """A copy of ``model`` in the form zennit's hooks need to apply xai_bench's treatments, for models
    zennit has no canonizer for: sums of two activations as zennit's ``Sum`` of a stack (the norm rule),
    functional average pooling, ReLUs and batch norms as modules, constant scalings as :class:`_Scale`
    (pass). Returns the copy, the (layer, batch norm) pairs to merge and the batch norms left on their own.
    """
    gm = fx.symbolic_trace(model)
    graph, serial = gm.graph, itertools.count()

    def swap(node: fx.Node, module: nn.Module, args) -> fx.Node:
        name = f"zennit_{next(serial)}"
        gm.add_submodule(name, module)
        with graph.inserting_before(node):
            new = graph.call_module(name, args)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        return new

    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        target, args, kwargs = node.target, node.args, node.kwargs
        if target in (operator.add, torch.add) and all(isinstance(a, fx.Node) for a in args[:2]):
            with graph.inserting_before(node):
                stacked = graph.call_function(_stacked_sum, tuple(args[:2]))
            swap(node, Sum(), (stacked,))
        elif target is operator.mul and isinstance(args[1], float):
            swap(node, _Scale(args[1]), (args[0],))
        elif target is F.avg_pool2d:
            swap(node, nn.AvgPool2d(*args[1:], **kwargs), (args[0],))
        elif target is F.adaptive_avg_pool2d:
            swap(node, nn.AdaptiveAvgPool2d(args[1]), (args[0],))
        elif target is F.relu:
            swap(node, nn.ReLU(), (args[0],))
        elif target is F.batch_norm:
            mean, var = gm.get_buffer(args[1].target), gm.get_buffer(args[2].target)
            weight, bias = gm.get_parameter(kwargs["weight"].target), gm.get_parameter(kwargs["bias"].target)
            norm = nn.BatchNorm2d(mean.numel(), eps=kwargs["eps"]).double().eval()
            norm.load_state_dict(
                {"running_mean": mean, "running_var": var, "weight": weight, "bias": bias}, strict=False
            )
            swap(node, norm, (args[0],))
    gm.recompile()
    pairs, alone = [], []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.BatchNorm2d):
            source = node.args[0]
            users = [u for u in source.users if u.target is not getattr] if isinstance(source, fx.Node) else []
            conv = source.op == "call_module" and isinstance(gm.get_submodule(source.target), nn.Conv2d)
            if conv and len(users) == 1:
                pairs.append(((source.target,), node.target))
            else:
                alone.append(node.target)
    return gm, pairs, tuple(alone)


torchvision = pytest.importorskip("torchvision")


def study_model(factory, size: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = exact_batch_norms(randomised(factory())).double().eval()
    return model, torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize(("depth", "composite"), [(18, "epsilon_plus_flat"), (18, "epsilon_gamma_box"),
                                                  (34, "epsilon_alpha2_beta1")])  # fmt: skip
def test_resnets_match_zennit_with_its_resnet_canonizer(depth, composite):
    from zennit.torchvision import ResNetCanonizer

    model, x = study_model(lambda: getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=3), 32)
    theirs = {
        "epsilon_plus_flat": lambda c: EpsilonPlusFlat(canonizers=c),
        "epsilon_gamma_box": lambda c: EpsilonGammaBox(low=0.0, high=1.0, canonizers=c),
        "epsilon_alpha2_beta1": lambda c: EpsilonAlpha2Beta1(canonizers=c),
    }[composite]([ResNetCanonizer()])
    params = {"low": 0.0, "high": 1.0} if composite == "epsilon_gamma_box" else {}
    assert_close(
        ours(model, x, [0, 2], composite=composite, **params), zennit_maps(model, x, [0, 2], theirs), rtol=1e-9
    )


@pytest.mark.slow
def test_vgg16_with_batch_norms_matches_zennit_with_its_vgg_canonizer():
    from zennit.torchvision import VGGCanonizer

    model, x = study_model(lambda: torchvision.models.vgg16_bn(weights=None, num_classes=3), 32)
    # One target (and one image) per big model: targets sharing a pass are checked on the small models.
    expected = zennit_maps(model, x, [2], EpsilonPlusFlat(canonizers=[VGGCanonizer()]))
    assert_close(ours(model, x, [2]), expected, rtol=1e-9)


WITHOUT_CANONIZER = {
    "densenet161": (lambda: torchvision.models.densenet161(weights=None, num_classes=3), 32),
    "inception_v3": (
        lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=3),
        75,
    ),
    "inception_resnet_v2": (
        lambda: pytest.importorskip("timm").create_model("inception_resnet_v2", pretrained=False, num_classes=3),
        75,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WITHOUT_CANONIZER))
def test_study_models_zennit_has_no_canonizer_for_match_zennit_on_a_canonical_copy(name):
    model, x = study_model(*WITHOUT_CANONIZER[name])
    ready, pairs, alone = zennit_ready(model)
    assert ("densenet" in name) == bool(alone)  # DenseNet's norms after concatenations
    composite = MixedComposite(
        [NameMapComposite([(alone, ZennitEpsilon(EPSILON))]), EpsilonPlusFlat(layer_map=[(_Scale, ZennitPass())])],
        canonizers=[NamedMergeBatchNorm(pairs)],
    )
    assert_close(ours(model, x, [2]), zennit_maps(ready, x, [2], composite), rtol=1e-9)
