from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift as CaptumDeepLift
from torch import nn

from xai_bench import SurgeryError, XaiBenchWarning, explain
from xai_bench.attributors.deeplift import deeplift_rules
from xai_bench.attributors.guided_backprop import GUIDED_RULES
from xai_bench.surgery import PLAIN, GuidedReLU, RescaleMaxPool, RescaleReLU, rewrite
from xai_bench.testing import model_state, tiny_cnn
from xai_bench.testing.conformance import assert_model_unchanged
from xai_bench.testing.models import FunctionalReluMLP, ProductModel


@pytest.mark.parametrize("rules", [PLAIN, GUIDED_RULES, deeplift_rules(1e-10)], ids=lambda r: r.name)
def test_rewrite_keeps_outputs_and_leaves_the_model_alone(rules, gen):
    model = tiny_cnn()
    x = torch.rand(4, 3, 12, 12, generator=gen, dtype=torch.float64)
    before_out = model(x)
    before = model_state(model)
    gm, report = rewrite(model, rules)
    torch.testing.assert_close(gm(x), before_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(model(x), before_out, rtol=0, atol=0)
    assert_model_unchanged(before, model)
    assert model.relu.inplace is True
    summary = " ".join(report.summary())
    assert "relu call sites of re-used modules unshared: 2" in summary
    assert "functional relu calls lifted to modules: 2" in summary
    # Guided backprop leaves max pooling's gradient as it is; the other rule sets lift both pools.
    assert ("max_pool" in summary) is (rules is not GUIDED_RULES)


def test_every_relu_call_site_gets_its_own_rule_module():
    model = tiny_cnn()
    gm, _ = rewrite(model, GUIDED_RULES)
    guided = [m for m in gm.modules() if isinstance(m, GuidedReLU)]
    assert len(guided) == 4 == len({id(m) for m in guided})  # 2 re-used in-place, 1 functional, 1 method
    assert not any(type(m) is nn.ReLU for name, m in gm.named_modules() if name.startswith("xai_bench"))
    gm, _ = rewrite(model, deeplift_rules(1e-10))
    assert sum(isinstance(m, RescaleReLU) for m in gm.modules()) == 4
    assert sum(isinstance(m, RescaleMaxPool) for m in gm.modules()) == 2  # module pool and functional pool


def test_rewritten_view_follows_later_weight_updates(gen):
    model = tiny_cnn()
    gm, _ = rewrite(model, PLAIN)
    x = torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        model.fc.weight.mul_(3)
    torch.testing.assert_close(gm(x), model(x))


def test_rewrite_is_rebuilt_when_a_layer_is_swapped():
    model = tiny_cnn()
    first, _ = rewrite(model, PLAIN)
    assert rewrite(model, PLAIN)[0] is first
    model.fc = nn.Linear(6, 4).double()
    assert rewrite(model, PLAIN)[0] is not first


def test_a_product_of_activations_is_exact_and_an_operation_without_a_rule_is_refused_naming_the_call_site():
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    ds = explain(ProductModel().double().eval(), x, methods=["deeplift"], targets=[0, 1])
    assert float(abs(ds["deeplift_delta"]).max()) < 1e-12  # the average (Shapley) rule is exact
    assert "product" in str(ds["deeplift"].attrs["surgery"])

    class Maximum(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3 * 8 * 8, 2), nn.Linear(3 * 8 * 8, 2)

        def forward(self, x):
            return torch.maximum(self.a(x.flatten(1)), self.b(x.flatten(1)))

    with pytest.raises(SurgeryError, match=r"(?s)'deeplift.*torch.maximum\(\)") as info:
        rewrite(Maximum().double().eval(), deeplift_rules(1e-10))
    assert "silently wrong" in str(info.value)
    with pytest.raises(SurgeryError):
        explain(Maximum().double().eval(), x, methods=["deeplift"], targets=0)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor value: torch.fx cannot trace this
            x = F.relu(x)
        return self.fc(x.flatten(1))


def test_untraceable_model_error_names_the_functional_relu_line():
    model = DataDependent().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(
        SurgeryError, match=r"(?s)could not trace.*torch.nn.functional.relu\(\) at .*test_surgery.py:\d+"
    ):
        explain(model, x, methods=["guided_backprop"], targets=0)
    # Methods that need no rewrite still work on it.
    assert explain(model, x, methods=["saliency"], targets=0)["saliency"].shape == (2, 1, 3, 8, 8)


def test_functional_relu_variants_are_all_found(gen):
    model = FunctionalReluMLP(12, [5, 5, 5, 5], 3, ["shared_inplace", "functional", "method_inplace", "torch"])
    model = model.double().eval()
    gm, _report = rewrite(model, GUIDED_RULES)
    assert sum(isinstance(m, GuidedReLU) for m in gm.modules()) == 4
    x = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(gm(x), model(x))


class OverlappingPool(nn.Module):
    """A convolution branch beside a 3x3 / stride 2 max pooling, as in InceptionResNetV2's mixed_6a."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.fc = nn.Linear(2 * 2 * 3 * 3, 2)

    def forward(self, x):
        return self.fc(torch.cat([self.conv(x), self.pool(x)], 1).flatten(1))


def test_max_pool_rule_is_exact_where_captum_unpooling_loses_overlaps(gen):
    torch.manual_seed(3)
    model = OverlappingPool().double().eval()
    x = torch.randn(8, 2, 7, 7, generator=gen, dtype=torch.float64)
    target = torch.ones(8, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces the hooks it sets
        _, captum_delta = CaptumDeepLift(model).attribute(
            x.clone().requires_grad_(True), target=target, return_convergence_delta=True
        )
    ds = explain(model, x, methods=["deeplift"], targets=[1])
    ours = torch.from_numpy(ds["deeplift_delta"].values[:, 0])
    assert ours.abs().max() < 1e-12
    # captum's max_unpool writes overlapping windows' credit to one place: the sum misses it.
    assert captum_delta.abs().max() > 1e-3


class _TwoBranches(nn.Module):
    """Two linear branches of the input combined by ``combine(self, a, b)``."""

    def __init__(self, combine) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)  # inputs (N, 1, 2, 2)
        self.weight = nn.Parameter(torch.randn(4, 4))
        self.same = nn.Identity()
        self.combine = combine

    def forward(self, x):
        x = x.flatten(1)
        return self.combine(self, self.a(x), self.b(x))


NOT_LINEAR = {
    "product by keyword": lambda s, a, b: torch.mul(a, other=b),
    "quotient by keyword": lambda s, a, b: torch.div(a, other=b),
    "floor division by a constant": lambda s, a, b: torch.div(a, 2, rounding_mode="floor"),
    "a mask from an activation": lambda s, a, b: a * (b > 0),
    "a float mask from an activation": lambda s, a, b: a * (b > 0).float(),
    "an activation as a linear layer's weight": lambda s, a, b: F.linear(a, b.reshape(-1, 4)[:4]),
    "einsum in sublist form": lambda s, a, b: torch.einsum(a, [0, 1], b, [0, 1], [0, 1]),
}


@pytest.mark.parametrize("case", sorted(NOT_LINEAR))
def test_non_linear_operations_in_unusual_spellings_are_refused_not_taken_as_linear(case):
    with pytest.raises(SurgeryError, match="no exact rule is known"):
        rewrite(_TwoBranches(NOT_LINEAR[case]).double().eval(), deeplift_rules(1e-10))


def test_a_module_applied_to_a_parameter_is_a_constant_and_the_map_stays_exact():
    model = _TwoBranches(lambda s, a, b: torch.relu(a) @ s.same(s.weight) + b).double().eval()
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    ds = explain(model, x, methods=["deeplift"], targets=[0, 1])
    assert float(abs(ds["deeplift_delta"]).max()) < 1e-12


def test_a_model_that_moves_the_batch_dimension_is_refused_by_the_rules():
    class SequenceFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.norm, self.head = nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 2)

        def forward(self, x):
            tokens = self.embed(x.flatten(2).transpose(1, 2)).permute(1, 0, 2)  # (tokens, batch, features)
            h = self.norm(tokens)
            return self.head((h * torch.sigmoid(1.702 * h)).permute(1, 0, 2).mean(1))

    with pytest.raises(SurgeryError, match="first dimension is not the batch of 2"):
        explain(SequenceFirst().double().eval(), torch.rand(1, 3, 2, 2, dtype=torch.float64), methods="deeplift",
                targets=[0])  # fmt: skip


def test_softmax_rewritten_keeps_its_dtype_and_far_apart_peaks_are_warned_about_not_nan():
    class Scores(nn.Module):
        def __init__(self, dtype=None) -> None:
            super().__init__()
            self.dtype = dtype

        def forward(self, x):
            if self.dtype is None:
                return torch.softmax(x.flatten(1), -1)
            return torch.softmax(x.flatten(1), -1, self.dtype)  # the dtype given by position

    rewritten, _ = rewrite(Scores(torch.float64).eval(), deeplift_rules(1e-10))
    assert rewritten(torch.zeros(2, 1, 2, 2)).dtype == torch.float64
    model = Scores().eval()
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    near = torch.tensor([10.0, 0, 0, 0], dtype=torch.float64).reshape(1, 2, 2)
    ds = explain(model, x, methods={"deeplift": {"baseline": near}}, targets=[0, 1])
    assert float(abs(ds["deeplift_delta"]).max()) < 1e-9
    # Peaks 200 apart: the normalisers differ by e^200, the exact terms cancel beyond float64, and the
    # summation check says so; no NaN either way.
    far = torch.tensor([200.0, 0, 0, 0], dtype=torch.float64).reshape(1, 2, 2)
    with pytest.warns(XaiBenchWarning, match=r"the maps miss f\(x\) - f\(baseline\)"):
        ds = explain(model, x, methods={"deeplift": {"baseline": far}}, targets=[0, 1])
    assert np.isfinite(ds["deeplift"].values).all()
