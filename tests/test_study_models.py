"""The five architectures of the study, unmodified and randomly initialised, at small sizes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution as CaptumDeconvolution
from captum.attr import GuidedBackprop as CaptumGuidedBackprop

from xai_bench import explain
from xai_bench.attributors.builtin import BUILTIN_METHODS
from xai_bench.attributors.guided_backprop import GUIDED_RULES
from xai_bench.surgery import PLAIN, GuidedReLU, rewrite
from xai_bench.testing import model_state
from xai_bench.testing.conformance import assert_model_unchanged

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.slow

# The smallest inputs each architecture takes (the Inceptions' stems need 75 px): every ReLU, pooling and
# concatenation is still on the path, at a quarter of the cost of 64 px (DenseNet161 in float64 is the slowest).
STUDY = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=3), 32),
    "resnet34": (lambda: torchvision.models.resnet34(weights=None, num_classes=3), 32),
    "densenet161": (lambda: torchvision.models.densenet161(weights=None, num_classes=3), 32),
    "inception_v3": (
        lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=3),
        75,
    ),
    "inception_resnet_v2": (
        lambda: timm.create_model("inception_resnet_v2", pretrained=False, num_classes=3),
        75,
    ),
}


@pytest.fixture(scope="module", params=list(STUDY))
def study(request):
    torch.manual_seed(0)
    factory, size = STUDY[request.param]
    model = factory().double().eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return request.param, model, x


def test_deeplift_sums_to_delta(study):
    _name, model, x = study
    baseline = torch.full(x.shape[1:], 0.25, dtype=torch.float64)
    ds = explain(model, x, targets=[0, 2], methods={"deeplift": {"baseline": baseline}})
    with torch.no_grad():
        expected = (model(x) - model(baseline.unsqueeze(0)))[:, [0, 2]].numpy()
    sums = ds["deeplift"].values.sum(axis=(2, 3, 4))
    np.testing.assert_allclose(sums, expected, rtol=1e-9, atol=1e-12)
    assert np.abs(ds["deeplift_delta"].values).max() <= 1e-9 * np.abs(expected).max()


def test_guided_backprop_gates_every_relu(study):
    _name, model, x = study
    ds = explain(model, x, targets=[1], methods={"guided_backprop": {}, "saliency": {"abs": False}})
    ours = torch.from_numpy(ds["guided_backprop"].values[:, 0])
    # Reference: captum's guided backprop is right once every ReLU call is a distinct module.
    plain, _ = rewrite(model, PLAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces the hooks it sets
        reference = CaptumGuidedBackprop(plain).attribute(x.clone().requires_grad_(True), target=1)
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-14)
    gradient = ds["saliency"].values
    assert np.abs(ds["guided_backprop"].values - gradient).max() > 1e-3 * np.abs(gradient).max()

    # Every guided ReLU passes back no negative gradient and nothing where its input was <= 0.
    guided, _ = rewrite(model, GUIDED_RULES)
    seen = []

    def capture(module, grad_input, grad_output):
        seen.append((module.last_input, grad_input[0]))

    def remember(module, args):
        module.last_input = args[0].detach()

    relus = [m for m in guided.modules() if isinstance(m, GuidedReLU)]
    handles = [
        h for m in relus for h in (m.register_forward_pre_hook(remember), m.register_full_backward_hook(capture))
    ]
    try:
        inp = x.clone().requires_grad_(True)
        guided(inp)[:, 1].sum().backward()
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == len(relus) > 0
    for relu_input, grad in seen:
        assert (grad >= 0).all()
        assert (grad[relu_input <= 0] == 0).all()


def test_deconvolution_matches_captum_on_the_plain_view(study):
    _name, model, x = study
    ds = explain(model, x, targets=[2], methods=["deconvolution"])
    plain, _ = rewrite(model, PLAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum announces the hooks it sets
        reference = CaptumDeconvolution(plain).attribute(x.clone().requires_grad_(True), target=2)
    torch.testing.assert_close(torch.from_numpy(ds["deconvolution"].values[:, 0]), reference, rtol=1e-9, atol=1e-14)


def test_all_six_methods_run_and_leave_the_model_alone(study):
    _name, model, x = study
    before = model_state(model)
    ds = explain(
        model,
        x[:1],
        targets=[0, 1],
        methods={
            "occlusion": {"window": 32, "stride": 32},
            "saliency": {},
            "input_x_gradient": {},
            "guided_backprop": {},
            "integrated_gradients": {"n_steps": 4},
            "deeplift": {},
        },
        passes=8,
    )
    assert_model_unchanged(before, model)
    for method in BUILTIN_METHODS:
        values = ds[method].values
        assert values.shape == (1, 2, *x.shape[1:])
        assert np.isfinite(values).all() and np.abs(values).max() > 0, method
