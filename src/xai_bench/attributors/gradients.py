"""Gradient methods that need no rewrite: saliency and input × gradient."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import InvalidParameterError
from .base import Attribution, SharesTargets, empty_maps, target_columns


def input_gradients(model: nn.Module, inputs: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients (N, T, C, H, W) of every masked (sample, target) score from one forward pass, and the logits."""
    columns = target_columns(mask)
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        outputs = model(x)
        if targets.shape[1] == 1 and bool(mask.all()):
            # One target for every sample (the common call): the gradient is the answer, no copies.
            (grad,) = torch.autograd.grad(outputs[torch.arange(len(x)), targets[:, 0]].sum(), x)
            return grad.unsqueeze(1), outputs.detach()
        grads = empty_maps(inputs, targets.shape[1])
        for i, (column, rows) in enumerate(columns):
            score = outputs[rows, targets[rows, column]].sum()
            (grad,) = torch.autograd.grad(score, x, retain_graph=i < len(columns) - 1)
            grads[rows, column] = grad[rows]
    return grads, outputs.detach()


class Saliency(SharesTargets):
    """Gradient of the target score with respect to the input (Simonyan et al., 2014)."""

    id: ClassVar[str] = "saliency"

    def __init__(self, *, abs: bool = True) -> None:
        if not isinstance(abs, bool):
            raise InvalidParameterError(f"saliency: abs must be True or False, got {abs!r}.")
        self.abs = abs

    def attribute_many(self, model, inputs, targets, mask, *, batch_size=None) -> Attribution:
        grads, outputs = input_gradients(model, inputs, targets, mask)
        return Attribution(grads.abs_() if self.abs else grads, outputs=outputs)


class InputXGradient(SharesTargets):
    """Input times the gradient of the target score (Shrikumar et al., 2016)."""

    id: ClassVar[str] = "input_x_gradient"
    multiplies_by_inputs: ClassVar[bool] = True

    def attribute_many(self, model, inputs, targets, mask, *, batch_size=None) -> Attribution:
        grads, outputs = input_gradients(model, inputs, targets, mask)
        return Attribution(grads.mul_(inputs.unsqueeze(1)), outputs=outputs)
