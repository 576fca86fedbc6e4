"""Gradient methods that need no rewrite: saliency and input × gradient (via captum)."""

from __future__ import annotations

from typing import ClassVar

from captum.attr import InputXGradient as _CaptumInputXGradient
from captum.attr import Saliency as _CaptumSaliency
from torch import Tensor, nn

from ..errors import InvalidParameterError
from .base import Attributor


def _leaf(inputs: Tensor) -> Tensor:
    # captum warns when it has to switch on requires_grad itself; hand it a fresh leaf instead.
    return inputs.detach().requires_grad_(True)


class Saliency(Attributor):
    """Gradient of the target score with respect to the input (Simonyan et al., 2014)."""

    id: ClassVar[str] = "saliency"

    def __init__(self, *, abs: bool = True) -> None:
        if not isinstance(abs, bool):
            raise InvalidParameterError(f"saliency: abs must be True or False, got {abs!r}.")
        self.abs = abs

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None) -> Tensor:
        return _CaptumSaliency(model).attribute(_leaf(inputs), target=target, abs=self.abs)


class InputXGradient(Attributor):
    """Input times the gradient of the target score (Shrikumar et al., 2016)."""

    id: ClassVar[str] = "input_x_gradient"
    multiplies_by_inputs: ClassVar[bool] = True

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None) -> Tensor:
        return _CaptumInputXGradient(model).attribute(_leaf(inputs), target=target)
