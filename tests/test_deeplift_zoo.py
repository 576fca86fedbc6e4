"""DeepLIFT sums to f(x) - f(baseline) on modern architectures (random init, float64, small inputs,
random batch-norm statistics): SiLU, GELU, hard activations, squeeze-and-excitation gating, layer
norm, attention."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from xai_bench import explain
from xai_bench.testing import randomised

pytestmark = pytest.mark.slow

ZOO = {
    "torchvision efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=5),
    "torchvision mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=5),
    "torchvision convnext_tiny": lambda: torchvision.models.convnext_tiny(weights=None, num_classes=5),
    "torchvision vit_b_16": lambda: torchvision.models.vit_b_16(weights=None, num_classes=5, image_size=64),
    "timm efficientnet_b0": lambda: timm.create_model("efficientnet_b0", pretrained=False, num_classes=5),
    "timm mobilenetv3_small_100": lambda: timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=5),
    "timm regnety_002": lambda: timm.create_model("regnety_002", pretrained=False, num_classes=5),
    "timm vit_tiny_patch16_224": lambda: timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=64
    ),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_deeplift_sums_to_the_change_of_the_logit(name):
    torch.manual_seed(0)
    model = randomised(ZOO[name]()).eval().double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64)
    baseline = torch.rand(3, 64, 64, generator=g, dtype=torch.float64) * 0.5
    ds = explain(model, x, methods={"deeplift": {"baseline": baseline}}, targets=[0, 3], passes=4)
    with torch.no_grad():
        change = model(x)[:, [0, 3]] - model(baseline[None])[:, [0, 3]]
    delta = torch.as_tensor(ds["deeplift_delta"].values)
    assert change.abs().max() > 1e-6  # the maps have something to add up to
    assert (delta.abs() <= 1e-9 * change.abs().clamp(min=1.0)).all(), (name, delta, change)
    rewrites = str(ds["deeplift"].attrs["surgery"])
    assert any(kind in rewrites for kind in ("product", "layer_norm", "mha", "attention")), rewrites


def test_a_vision_transformer_given_another_input_size_gets_an_error_naming_the_models_message():
    from xai_bench import InvalidInputError

    model = ZOO["timm vit_tiny_patch16_224"]().eval()
    with pytest.raises(InvalidInputError, match=r"model's forward failed on inputs of shape \(1, 3, 80, 80\): "
                       r"AssertionError: .*80"):  # fmt: skip
        explain(model, torch.rand(1, 3, 80, 80), methods="deeplift", targets=[0])
