"""Grad-CAM on a named layer, registered with xai_bench through its entry point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import Tensor, nn

from xai_bench import Attribution, InvalidParameterError, OneTarget, hookimpl
from xai_bench.core.errors import did_you_mean

__version__ = "0.1.0"


class GradCAM(OneTarget):
    """Class activation map of ``layer``, weighted by its pooled gradients, upsampled to the input."""

    id: ClassVar[str] = "gradcam"

    def __init__(self, *, layer: str, relu: bool = True, interpolation: str = "bilinear") -> None:
        if not isinstance(layer, str) or not layer:
            raise InvalidParameterError(f"gradcam: layer must be a module name such as 'layer4', got {layer!r}.")
        if interpolation not in ("bilinear", "nearest", "bicubic"):
            raise InvalidParameterError(
                f"gradcam: interpolation must be 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}."
            )
        self.layer = layer
        self.relu = bool(relu)
        self.interpolation = interpolation

    def _module(self, model: nn.Module) -> nn.Module:
        names = [name for name, _ in model.named_modules() if name]
        if self.layer not in names:
            raise InvalidParameterError(
                f"gradcam: the model has no layer {self.layer!r}.{did_you_mean(self.layer, names)}"
            )
        return model.get_submodule(self.layer)

    def attribute_target(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Attribution:
        cam = LayerGradCam(model, self._module(model)).attribute(
            inputs.detach().requires_grad_(True), target=target, relu_attributions=self.relu
        )
        if cam.dim() != 4:
            raise InvalidParameterError(
                f"gradcam: layer {self.layer!r} outputs shape {tuple(cam.shape)}; pick a convolutional layer."
            )
        align = None if self.interpolation == "nearest" else False
        cam = F.interpolate(cam, size=inputs.shape[-2:], mode=self.interpolation, align_corners=align)
        return Attribution(cam.expand(-1, inputs.shape[1], -1, -1).contiguous())


@hookimpl
def register_attributors(register: Callable[..., Any]) -> None:
    register(GradCAM)
