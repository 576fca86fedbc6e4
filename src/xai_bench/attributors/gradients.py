"""Gradient methods that need no rewrite: saliency and input × gradient."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import InvalidParameterError
from .base import Attribution, Attributor, select


def input_gradient(model: nn.Module, inputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Return d score[target] / d inputs and the logits, from one forward and one backward pass."""
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        outputs = model(x)
        (grad,) = torch.autograd.grad(select(outputs, target).sum(), x)
    return grad, outputs.detach()


class Saliency(Attributor):
    """Gradient of the target score with respect to the input (Simonyan et al., 2014)."""

    id: ClassVar[str] = "saliency"

    def __init__(self, *, abs: bool = True) -> None:
        if not isinstance(abs, bool):
            raise InvalidParameterError(f"saliency: abs must be True or False, got {abs!r}.")
        self.abs = abs

    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None
    ) -> Attribution:
        grad, outputs = input_gradient(model, inputs, target)
        return Attribution(grad.abs() if self.abs else grad, outputs=outputs)


class InputXGradient(Attributor):
    """Input times the gradient of the target score (Shrikumar et al., 2016)."""

    id: ClassVar[str] = "input_x_gradient"
    multiplies_by_inputs: ClassVar[bool] = True

    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None
    ) -> Attribution:
        grad, outputs = input_gradient(model, inputs, target)
        return Attribution(grad * inputs, outputs=outputs)
