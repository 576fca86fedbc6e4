"""DeepLIFT sums to f(x) - f(baseline) on modern architectures (random init, float64, small inputs,
random batch-norm statistics): SiLU, GELU, hard activations, squeeze-and-excitation gating, layer
norm, attention."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from xai_bench import explain

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


def random_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (zero-initialised heads and 1e-6 layer scales would leave the logits
    flat) and batch norms with random running statistics and affine parameters, as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "scale" not in name and "gamma" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
            elif name.endswith(("weight", "gamma")) or "scale" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.2 + 0.2)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("name", sorted(ZOO))
def test_deeplift_sums_to_the_change_of_the_logit(name):
    torch.manual_seed(0)
    model = random_statistics(ZOO[name]()).eval().double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64)
    baseline = torch.rand(3, 64, 64, generator=g, dtype=torch.float64) * 0.5
    ds = explain(model, x, methods={"deeplift": {"baseline": baseline}}, targets=[0, 3], batch_size=4)
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
