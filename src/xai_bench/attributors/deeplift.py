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
from ..core.errors import InvalidParameterError, warn
from ..surgery import Product, Rescale, RescaleMaxPool, RescaleReLU, RuleSet, composite, pairs_in_pass, rewrite
from .arguments import (
    check_baseline,
    check_baseline_set,
    check_sample_baselines,
    check_sample_baselines_fit,
    reference_set,
)
from .base import Attribution, Attributor, Batch, Cost, Prepared, zero_maps
from .layer import AtLayer, gradient_or_zero, layer_pass


def deeplift_rules(eps: float) -> RuleSet:
    """The rescale rule for element-wise functions, the exact max-pooling rule, the average (Shapley) rule
    for products of two activations, and layer norm, softmax and attention composed of those."""

    def pointwise(fn):
        return Rescale(fn, eps)

    return RuleSet(
        name=f"deeplift(eps={eps!r})",
        relu=lambda site: RescaleReLU(eps),
        pointwise=lambda site: pointwise(site.fn),
        max_pool=lambda site: RescaleMaxPool(site.fn, eps),
        product=lambda site: Product(site.fn),
        composite=lambda site: composite(site.composite, pointwise, Product, site.fn, site.where),
        strict=True,
    )


def _check_summation(missed: Tensor, scale: Tensor) -> None:
    """Warn when maps miss f(x) - f(reference) by more than rounding: every rule is exact, so a larger
    miss means an operation the rules did not see as it is, or rounding of large cancelling terms."""
    tolerance = torch.finfo(missed.dtype).eps ** 0.5
    worst = float((missed.abs() / scale.clamp(min=torch.finfo(missed.dtype).tiny)).max()) if len(missed) else 0.0
    if worst > tolerance:
        warn(
            f"deeplift: the maps miss f(x) - f(baseline) by up to {worst:.2g} of the logits' size (rounding would be "
            f"below {tolerance:.1g}); see deeplift_delta. An operation whose rule is not exact for this model, or "
            "large terms that cancel (a reference that layer norm sees as constant), can cause it."
        )


class DeepLift(AtLayer, Attributor):
    """Multipliers from finite differences against a ``baseline``; maps sum to f(x) - f(baseline).

    With ``baselines`` (B, C, H, W), a set of reference images, the maps are the mean of the B
    single-baseline maps (captum's DeepLiftShap) and sum to f(x) - mean f(baseline); the B
    references are the method's expansion axis, so the engine batches them like any other.
    ``sample_baselines`` (N, C, H, W) gives each input sample its own reference (explain() only).

    With ``layer`` (a module name), the multipliers at that layer's output times its activation
    minus the reference's (captum's ``LayerDeepLift``), on the same rewritten view: maps of the
    layer's output shape per sample, which sum to f(x) - f(baseline) exactly where every path from
    the input to the output runs through the layer (a skip connection around it carries the rest).
    """

    id: ClassVar[str] = "deeplift"
    needs_baseline: ClassVar[bool] = True
    needs_surgery: ClassVar[bool] = True
    multiplies_by_inputs: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(
        self,
        *,
        baseline: Any = 0.0,
        baselines: Tensor | None = None,
        sample_baselines: Tensor | None = None,
        eps: float = 1e-10,
        layer: str | None = None,
    ) -> None:
        self.baseline = check_baseline(self.id, baseline)
        self.baselines = check_baseline_set(self.id, baselines, baseline)
        self.sample_baselines = check_sample_baselines(self.id, sample_baselines, baseline, baselines)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise InvalidParameterError(f"deeplift: eps must be a non-negative number, got {eps!r}.")
        self.eps = float(eps)
        self._init_layer(layer)

    def params(self) -> dict[str, Any]:
        return self._layer_params(
            {
                "baseline": json_safe(self.baseline),
                "baselines": json_safe(self.baselines),
                "sample_baselines": json_safe(self.sample_baselines),
                "eps": self.eps,
            }
        )

    def check_inputs(self, inputs: Tensor) -> None:
        check_sample_baselines_fit(self.id, self.sample_baselines, inputs)

    def works_in_blocks(self) -> str | None:
        return None if self.sample_baselines is None else "sample_baselines are rows of one explain() call"

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        # One item per reference, of two images: the input and that reference run in one pass.
        return Cost(items=1 if self.baselines is None else len(self.baselines), images=2)

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        rewritten, report = rewrite(model, deeplift_rules(self.eps), example)
        prepared = Prepared(rewritten, tuple(report.summary()), decomposed=report.decomposed)
        return self._at_layer(model, example, prepared)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        inputs, targets = batch.inputs, batch.targets
        n, t = targets.shape
        sample = batch.sample.to(inputs.device)
        refs = reference_set(
            self.id, self.baseline, self.baselines, inputs,
            sample_baselines=self.sample_baselines, position=batch.position,
        )  # fmt: skip
        x = inputs.detach()[sample]  # one row per (sample, reference) pair of the pass
        ref = refs[batch.item.to(inputs.device), sample]
        share = 1.0 / refs.shape[0]  # the mean over the references
        diff = x - ref
        pairs = len(x)
        wanted = batch.mask[sample]
        columns = [c for c in range(t) if wanted[:, c].any()]
        with torch.enable_grad():
            # Inputs and references in one batch: each rule module sees both halves.
            both = torch.cat([x, ref])
            if self.layer is None:
                against, shape, exact = both.requires_grad_(True), None, True
                with pairs_in_pass(pairs):
                    out = model(both)
            else:  # the multipliers at the layer's output, times its change
                where, spec = self._site(model, inputs)
                with pairs_in_pass(pairs):
                    run = layer_pass(model, where, spec, both, self.id)
                against, out, shape, exact = run.activations, run.outputs, spec.shape, spec.cut
                diff = against.detach()[:pairs] - against.detach()[pairs:]
            maps = zero_maps(inputs, t, shape)
            delta = inputs.new_zeros((n, t))
            for i, c in enumerate(columns):
                rows = wanted[:, c].nonzero().flatten()
                picked = targets[sample[rows], c]
                grad = gradient_or_zero(out[rows, picked].sum(), against, retain_graph=i < len(columns) - 1)
                with torch.no_grad():
                    pair_maps = grad[rows] * diff[rows]
                    expected = out[rows, picked] - out[pairs + rows, picked]
                    missed = pair_maps.flatten(1).sum(1) - expected
                    if exact:  # around a layer that is not a cut, the rest goes by the other paths
                        _check_summation(missed, out[rows, picked].abs() + out[pairs + rows, picked].abs())
                    maps[:, c].index_add_(0, sample[rows], share * pair_maps)
                    delta[:, c].index_add_(0, sample[rows], share * missed)
        outputs = inputs.new_full((n, out.shape[1]), float("nan"))
        outputs[sample] = out[:pairs].detach()
        return Attribution(maps, delta=delta, outputs=outputs)
