"""Occlusion (Zeiler & Fergus, 2014), via captum."""

from __future__ import annotations

import math
from typing import ClassVar

from captum.attr import Occlusion as _CaptumOcclusion
from torch import Tensor, nn

from ..errors import InvalidParameterError
from .base import Attributor, Cost, check_pair


class Occlusion(Attributor):
    """Score drop when a ``window`` patch, slid by ``stride``, is filled with ``fill``.

    Defaults suit 512 × 512 radiographs (961 windows); pass a smaller window for small images.
    Pixels no window covers (when the stride does not tile the image) get zero.
    """

    id: ClassVar[str] = "occlusion"

    def __init__(
        self, *, window: int | tuple[int, int] = 32, stride: int | tuple[int, int] = 16, fill: float = 0.0
    ) -> None:
        self.window = check_pair(self.id, "window", window)
        self.stride = check_pair(self.id, "stride", stride)
        if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
            raise InvalidParameterError(f"occlusion: fill must be a finite number, got {fill!r}.")
        self.fill = float(fill)

    def _windows(self, input_shape: tuple[int, ...]) -> int:
        _, h, w = input_shape[-3:]
        (wh, ww), (sh, sw) = self.window, self.stride
        if wh > h or ww > w:
            raise InvalidParameterError(
                f"occlusion: window {self.window} is larger than the image ({h}, {w}); pass a smaller window."
            )
        return ((h - wh) // sh + 1) * ((w - ww) // sw + 1)

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        return Cost(forward=self._windows(input_shape) + 1)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None) -> Tensor:
        n, c = inputs.shape[:2]
        windows = self._windows(tuple(inputs.shape[1:]))
        per_eval = windows if batch_size is None else max(1, batch_size // n)
        return _CaptumOcclusion(model).attribute(
            inputs,
            sliding_window_shapes=(c, *self.window),
            strides=(c, *self.stride),
            baselines=self.fill,
            target=target,
            perturbations_per_eval=per_eval,
        )
