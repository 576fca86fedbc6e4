"""Occlusion (Zeiler & Fergus, 2014)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..errors import InvalidParameterError
from .base import Attribution, Cost, SharesTargets, check_pair


class Occlusion(SharesTargets):
    """Score drop when a ``window`` patch, slid by ``stride``, is filled with ``fill``.

    Windows start every ``stride`` pixels until one reaches the border; the last ones are clipped
    there, so every pixel is covered. A pixel's value is the mean score drop of the windows that
    cover it (captum's definition). Defaults suit 512 × 512 radiographs (961 windows); pass a
    smaller window for small images.
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
        if self.stride[0] > self.window[0] or self.stride[1] > self.window[1]:
            raise InvalidParameterError(
                f"occlusion: stride {self.stride} is larger than window {self.window}, which would leave "
                "pixels that no window covers; use a stride no larger than the window."
            )

    def _starts(self, input_shape: tuple[int, ...]) -> list[tuple[int, int]]:
        h, w = input_shape[-2:]
        (wh, ww), (sh, sw) = self.window, self.stride
        if wh > h or ww > w:
            raise InvalidParameterError(
                f"occlusion: window {self.window} is larger than the image ({h}, {w}); pass a smaller window."
            )
        rows = range(0, (math.ceil((h - wh) / sh) + 1) * sh, sh)
        cols = range(0, (math.ceil((w - ww) / sw) + 1) * sw, sw)
        return [(y, x) for y in rows for x in cols]

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        return Cost(forward=len(self._starts(input_shape)) + 1)

    def attribute_many(self, model, inputs, targets, mask, *, batch_size=None) -> Attribution:
        n, c, h, w = inputs.shape
        starts = self._starts(inputs.shape)
        wh, ww = self.window
        per_pass = len(starts) if batch_size is None else max(1, batch_size // n)
        rows = torch.arange(n, device=inputs.device).unsqueeze(1)
        with torch.no_grad():
            outputs = model(inputs)
            reference = outputs[rows, targets]  # (n, T)
            drop = torch.zeros(n, targets.shape[1], 1, h, w, dtype=inputs.dtype, device=inputs.device)
            covered = torch.zeros(1, 1, 1, h, w, dtype=inputs.dtype, device=inputs.device)
            for first in range(0, len(starts), per_pass):
                chunk = starts[first : first + per_pass]
                batch = inputs.unsqueeze(0).repeat(len(chunk), 1, 1, 1, 1)
                for j, (y, x) in enumerate(chunk):
                    batch[j, :, :, y : y + wh, x : x + ww] = self.fill
                # Every target's score comes from the same occluded outputs: one sweep serves all.
                scores = model(batch.view(-1, c, h, w)).view(len(chunk), n, -1)[:, rows, targets]
                diff = reference.unsqueeze(0) - scores  # (windows, n, T)
                for j, (y, x) in enumerate(chunk):
                    drop[..., y : y + wh, x : x + ww] += diff[j].view(n, -1, 1, 1, 1)
                    covered[..., y : y + wh, x : x + ww] += 1
        maps = (drop / covered).expand(n, targets.shape[1], c, h, w).clone()
        maps[~mask] = float("nan")
        return Attribution(maps, outputs=outputs)
