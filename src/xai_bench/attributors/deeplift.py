"""DeepLIFT with the rescale rule (Shrikumar et al., 2017), exact on the study's architectures.

The model is rewritten so every ReLU (module or functional, in-place or re-used), every other
element-wise non-linearity and every max pooling is its own rule module; inputs and references
run as one batch so each rule sees both. Max pooling uses an exact rule that also holds for
overlapping windows, where captum's un-pooling overwrites instead of summing shared positions.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.checks import json_safe
from ..core.errors import InvalidParameterError
from ..surgery import Rescale, RescaleMaxPool, RescaleReLU, RuleSet, rewrite
from .arguments import baseline_like, check_baseline
from .base import Attribution, Attributor, Batch, Cost, Prepared, zero_maps


def deeplift_rules(eps: float) -> RuleSet:
    return RuleSet(
        name=f"deeplift(eps={eps!r})",
        relu=lambda site: RescaleReLU(eps),
        pointwise=lambda site: Rescale(site.fn, eps),
        max_pool=lambda site: RescaleMaxPool(site.fn, eps),
        strict=True,
    )


class DeepLift(Attributor):
    """Multipliers from finite differences against a ``baseline``; maps sum to f(x) - f(baseline)."""

    id: ClassVar[str] = "deeplift"
    needs_baseline: ClassVar[bool] = True
    needs_surgery: ClassVar[bool] = True
    multiplies_by_inputs: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(self, *, baseline: Any = 0.0, eps: float = 1e-10) -> None:
        self.baseline = check_baseline(self.id, baseline)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise InvalidParameterError(f"deeplift: eps must be a non-negative number, got {eps!r}.")
        self.eps = float(eps)

    def params(self) -> dict[str, Any]:
        return {"baseline": json_safe(self.baseline), "eps": self.eps}

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        # One item per sample, of two images: the input and its reference run in one pass.
        return Cost(items=1, images=2)

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        rewritten, report = rewrite(model, deeplift_rules(self.eps), example)
        return Prepared(rewritten, tuple(report.summary()))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        inputs, targets = batch.inputs, batch.targets
        n = inputs.shape[0]
        ref = baseline_like(self.id, self.baseline, inputs)
        diff = inputs.detach() - ref
        maps = zero_maps(inputs, targets.shape[1])
        delta = inputs.new_zeros(targets.shape)
        columns = batch.columns()
        with torch.enable_grad():
            # Inputs and references in one batch: each rule module sees both halves.
            pair = torch.cat([inputs.detach(), ref]).requires_grad_(True)
            out = model(pair)
            for i, (column, rows) in enumerate(columns):
                picked = targets[rows, column]
                (grad,) = torch.autograd.grad(out[rows, picked].sum(), pair, retain_graph=i < len(columns) - 1)
                column_maps = grad[rows] * diff[rows]
                maps[rows, column] = column_maps
                with torch.no_grad():
                    expected = out[rows, picked] - out[n + rows, picked]
                    delta[rows, column] = column_maps.flatten(1).sum(1) - expected
        return Attribution(maps, delta=delta, outputs=out[:n].detach())
