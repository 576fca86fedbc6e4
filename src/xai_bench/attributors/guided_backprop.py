"""Guided backpropagation (Springenberg et al., 2015) on a rewritten view of the model."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ..surgery import GuidedReLU, RuleSet, rewrite
from .base import Attribution, Attributor, Batch, Prepared
from .gradients import input_gradients

# Every ReLU call site, module or functional, in-place or re-used, becomes its own guided ReLU.
GUIDED_RULES = RuleSet(name="guided_backprop", relu=lambda site: GuidedReLU())


class GuidedBackprop(Attributor):
    """Gradient where every ReLU passes back only positive gradients through positive inputs."""

    id: ClassVar[str] = "guided_backprop"
    needs_surgery: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        rewritten, report = rewrite(model, GUIDED_RULES, example)
        return Prepared(rewritten, tuple(report.summary()))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        grads, outputs = input_gradients(model, batch.inputs, batch.targets, batch.mask)
        return Attribution(grads, outputs=outputs)
