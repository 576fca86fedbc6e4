"""Occlusion (Zeiler & Fergus, 2014)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..core.errors import InvalidParameterError
from .arguments import check_pair
from .base import Attribution, Attributor, Batch, Cost


class Occlusion(Attributor):
    """Score drop when a ``window`` patch, slid by ``stride``, is filled with ``fill``.

    Windows start every ``stride`` pixels until one reaches the border; the last ones are clipped
    there, so every pixel is covered. A pixel's value is the mean score drop of the windows that
    cover it (captum's definition). Defaults suit 512 × 512 radiographs (961 windows); pass a
    smaller window for small images.

    The expansion axis is the clean image (item 0) followed by one occluded copy per window. As
    every pixel is covered, the mean drop is f(x) minus the mean occluded score, so each item adds
    its own term and passes may split a sample's windows anywhere. The terms are added in float64,
    so that f(x) minus the mean occluded score keeps the precision of the score drop itself.
    """

    id: ClassVar[str] = "occlusion"
    reports_outputs: ClassVar[bool] = True

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
        return Cost(items=len(self._starts(input_shape)) + 1, backward=False)

    def check_inputs(self, inputs: Tensor) -> None:
        self._starts(tuple(inputs.shape[1:]))  # a window larger than the image, before any method runs

    def _share(self, starts: list[tuple[int, int]], h: int, w: int) -> Tensor:
        """1 / (number of windows covering each pixel), float64, cached per image size."""
        cache = self.__dict__.setdefault("_shares", {})
        if (h, w) not in cache:
            wh, ww = self.window
            covered = torch.zeros((h, w), dtype=torch.float64)
            for y, x in starts:
                covered[y : y + wh, x : x + ww] += 1
            cache[(h, w)] = 1.0 / covered
        return cache[(h, w)]

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets = batch.inputs, batch.targets
        n, _, h, w = x.shape
        starts = self._starts(x.shape)
        wh, ww = self.window
        sample, item = batch.sample.tolist(), batch.item.tolist()
        images = x[batch.sample.to(x.device)]  # indexing copies: the inputs stay as they are
        for j, k in enumerate(item):
            if k > 0:
                y0, x0 = starts[k - 1]
                images[j, :, y0 : y0 + wh, x0 : x0 + ww] = self.fill
        with torch.no_grad():
            out = model(images)
        # Every target's score comes from the same occluded outputs: one sweep serves all.
        scores = out.gather(1, targets[batch.sample.to(x.device)]).double()  # (pairs, T)
        share = self._share(starts, h, w).to(x.device)
        maps = torch.zeros((n, targets.shape[1], 1, h, w), dtype=torch.float64, device=x.device)
        outputs = x.new_full((n, out.shape[1]), float("nan"))
        for j, (s, k) in enumerate(zip(sample, item, strict=True)):
            if k == 0:
                maps[s] += scores[j].view(-1, 1, 1, 1)
                outputs[s] = out[j]
            else:
                y0, x0 = starts[k - 1]
                patch = share[y0 : y0 + wh, x0 : x0 + ww]
                maps[s, :, 0, y0 : y0 + wh, x0 : x0 + ww] -= scores[j].view(-1, 1, 1) * patch
        return Attribution(maps, outputs=outputs)

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        # One map per pixel, shared by the channels (captum's maps for a window over all channels).
        return Attribution(total.maps.to(inputs.dtype).expand(-1, -1, inputs.shape[1], -1, -1).contiguous())
