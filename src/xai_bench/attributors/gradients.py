"""Gradient methods that need no rewrite: saliency and input × gradient, at the input or at a layer."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.errors import InvalidParameterError
from .base import UNUSED_IS_ZERO, Attribution, Attributor, Batch, Prepared, target_columns, zero_maps
from .layer import AtLayer, layer_gradients


def input_gradients(model: nn.Module, inputs: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients (N, T, C, H, W) of every masked (sample, target) score from one forward pass, and the logits."""
    columns = target_columns(mask)
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        outputs = model(x)
        if targets.shape[1] == 1 and bool(mask.all()):
            # One target for every sample (the common call): the gradient is the answer, no copies.
            (grad,) = torch.autograd.grad(outputs[torch.arange(len(x)), targets[:, 0]].sum(), x, **UNUSED_IS_ZERO)
            return grad.unsqueeze(1), outputs.detach()
        grads = zero_maps(inputs, targets.shape[1])
        for i, (column, rows) in enumerate(columns):
            score = outputs[rows, targets[rows, column]].sum()
            (grad,) = torch.autograd.grad(score, x, retain_graph=i < len(columns) - 1, **UNUSED_IS_ZERO)
            grads[rows, column] = grad[rows]
    return grads, outputs.detach()


class Saliency(AtLayer, Attributor):
    """Gradient of the target score with respect to the input (Simonyan et al., 2014); ``abs`` takes its magnitude.

    With ``layer`` (a module name), the gradient with respect to that layer's output: maps of its
    output's shape per sample (captum's ``LayerGradientXActivation`` without the activation).
    """

    id: ClassVar[str] = "saliency"
    reports_outputs: ClassVar[bool] = True

    def __init__(self, *, abs: bool = True, layer: str | None = None) -> None:
        if not isinstance(abs, bool):
            raise InvalidParameterError(f"saliency: abs must be True or False, got {abs!r}.")
        self.abs = abs
        self._init_layer(layer)

    def params(self) -> dict[str, Any]:
        return self._layer_params(super().params())

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        return self._at_layer(model, example, Prepared(model))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        if self.layer is None:
            grads, outputs = input_gradients(model, batch.inputs, batch.targets, batch.mask)
        else:
            grads, _, outputs = layer_gradients(model, *self._site(model, batch.inputs), batch, self.id)
        return Attribution(grads.abs_() if self.abs else grads, outputs=outputs)


class InputXGradient(AtLayer, Attributor):
    """Input times the gradient of the target score (Shrikumar et al., 2016).

    With ``layer`` (a module name), the layer's activation times the gradient with respect to it
    (captum's ``LayerGradientXActivation``): maps of the layer's output shape per sample.
    """

    id: ClassVar[str] = "input_x_gradient"
    multiplies_by_inputs: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(self, *, layer: str | None = None) -> None:
        self._init_layer(layer)

    def params(self) -> dict[str, Any]:
        return self._layer_params(super().params())

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        return self._at_layer(model, example, Prepared(model))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        if self.layer is None:
            grads, outputs = input_gradients(model, batch.inputs, batch.targets, batch.mask)
            return Attribution(grads.mul_(batch.inputs.unsqueeze(1)), outputs=outputs)
        grads, activations, outputs = layer_gradients(model, *self._site(model, batch.inputs), batch, self.id)
        return Attribution(grads.mul_(activations.unsqueeze(1)), outputs=outputs)
