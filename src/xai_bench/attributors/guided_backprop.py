"""Guided backpropagation (Springenberg et al., 2015) and deconvolution (Zeiler & Fergus, 2014) on a rewritten
view of the model."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from ..surgery import DeconvReLU, GuidedReLU, RuleSet, rewrite
from .base import Attribution, Attributor, Batch, Prepared
from .gradients import input_gradients
from .layer import AtLayer, layer_gradients

# Every ReLU call site, module or functional, in-place or re-used, becomes its own guided ReLU. Other
# activations (SiLU, GELU, sigmoid gates, ...) pass their plain gradient, as in zennit's and captum's
# guided backprop: "guided" is defined for ReLUs only. A gradient method needs no exact rule for
# products or normalisations, so nothing is refused; the map's `surgery` attribute counts what was kept.
GUIDED_RULES = RuleSet(name="guided_backprop", relu=lambda site: GuidedReLU(), strict=False)
# Deconvolution's ReLUs pass back the positive part of the gradient whatever their input was; as for
# guided backprop, other activations pass their plain gradient.
DECONV_RULES = RuleSet(name="deconvolution", relu=lambda site: DeconvReLU(), strict=False)


class GuidedBackprop(AtLayer, Attributor):
    """Gradient where every ReLU passes back only positive gradients through positive inputs.

    Only ReLUs (module, functional, in-place, re-used or ``clamp(min=0)``) are guided; other
    activations pass their plain gradient, as in zennit and captum. With ``layer`` (a module name),
    the rule-modified gradient with respect to that layer's output (the ReLUs after it guided):
    maps of its output's shape per sample.
    """

    id: ClassVar[str] = "guided_backprop"
    needs_surgery: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True
    rules: ClassVar[RuleSet] = GUIDED_RULES

    def __init__(self, *, layer: str | None = None) -> None:
        self._init_layer(layer)

    def params(self) -> dict[str, Any]:
        return self._layer_params(super().params())

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        rewritten, report = rewrite(model, self.rules, example)
        prepared = Prepared(rewritten, tuple(report.summary()), decomposed=report.decomposed)
        return self._at_layer(model, example, prepared)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        if self.layer is None:
            grads, outputs = input_gradients(model, batch.inputs, batch.targets, batch.mask)
        else:
            grads, _, outputs = layer_gradients(model, *self._site(model, batch.inputs), batch, self.id)
        return Attribution(grads, outputs=outputs)


class Deconvolution(GuidedBackprop):
    """Gradient where every ReLU passes back the positive part of the gradient, whatever its input.

    The deconvnet backward pass (Zeiler & Fergus, 2014) as captum's ``Deconvolution`` and zennit's
    ``DeconvNet`` define it; ReLUs are found as for guided backprop (module, functional, in-place,
    re-used or ``clamp(min=0)``), and other activations pass their plain gradient. ``layer`` as for
    guided backprop.
    """

    id: ClassVar[str] = "deconvolution"
    rules: ClassVar[RuleSet] = DECONV_RULES
