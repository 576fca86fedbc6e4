"""Guided backpropagation (Springenberg et al., 2015) on a rewritten view of the model."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ..surgery import GuidedReLU, RuleSet, rewrite
from .base import Attribution, Prepared, SharesTargets
from .gradients import input_gradients

# Every ReLU call site, module or functional, in-place or re-used, becomes its own guided ReLU.
GUIDED_RULES = RuleSet(name="guided_backprop", relu=lambda site: GuidedReLU())


class GuidedBackprop(SharesTargets):
    """Gradient where every ReLU passes back only positive gradients through positive inputs."""

    id: ClassVar[str] = "guided_backprop"
    needs_surgery: ClassVar[bool] = True

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        rewritten, report = rewrite(model, GUIDED_RULES, example)
        return Prepared(rewritten, tuple(report.summary()))

    def attribute_many(self, model, inputs, targets, mask, *, batch_size=None) -> Attribution:
        grads, outputs = input_gradients(model, inputs, targets, mask)
        return Attribution(grads, outputs=outputs)
