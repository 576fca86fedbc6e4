"""Integrated gradients (Sundararajan et al., 2017), with captum's quadrature rules."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from ..core.checks import json_safe, positive_int
from ..core.errors import InvalidParameterError
from .arguments import (
    baseline_like,
    check_baseline,
    check_baseline_set,
    check_sample_baselines,
    check_sample_baselines_fit,
    reference_set,
)
from .base import UNUSED_IS_ZERO, Attribution, Attributor, Batch, Cost, zero_maps

_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


class IntegratedGradients(Attributor):
    """Path integral of gradients from a baseline to the input; ``n_steps`` points on the path.

    ``method`` is captum's quadrature rule; every rule's weights add up to one (captum's
    ``riemann_trapezoid`` weights add up to (n-1)/n: here they are the trapezoid rule's).

    The expansion axis holds the ``n_steps`` path points and then the input and the baseline
    themselves, whose forward passes give the completeness delta and the model's scores. With
    ``baselines`` (B, C, H, W), a set of reference images, the maps are the mean of the B
    single-baseline maps and the axis holds B such paths. ``sample_baselines`` (N, C, H, W) gives
    each input sample its own reference instead (explain() only: run() works in blocks).
    """

    id: ClassVar[str] = "integrated_gradients"
    needs_baseline: ClassVar[bool] = True
    multiplies_by_inputs: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n_steps: int = 50,
        method: str = "gausslegendre",
        baseline: Any = 0.0,
        baselines: Tensor | None = None,
        sample_baselines: Tensor | None = None,
    ) -> None:
        self.n_steps = positive_int("n_steps", n_steps, owner=self.id)
        if method not in _METHODS:
            raise InvalidParameterError(
                f"integrated_gradients: method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}."
            )
        if method.startswith("riemann") and self.n_steps < 2:
            raise InvalidParameterError(
                f"integrated_gradients: method {method!r} needs n_steps >= 2, got {self.n_steps}; "
                "use more steps, or method='gausslegendre', which works from one."
            )
        self.method = method
        self.baseline = check_baseline(self.id, baseline)
        self.baselines = check_baseline_set(self.id, baselines, baseline)
        self.sample_baselines = check_sample_baselines(self.id, sample_baselines, baseline, baselines)
        # With more than one reference, each pair's contribution carries its own (x - reference).
        self._difference_in_pass = self.baselines is not None or self.sample_baselines is not None
        step_sizes, alphas = _quadrature(self.method, self.n_steps)
        # Items n_steps and n_steps + 1 are the input (alpha 1) and the baseline (alpha 0), weight 0.
        self._alpha = torch.tensor([*alphas, 1.0, 0.0], dtype=torch.float64)
        self._weight = torch.tensor([*step_sizes, 0.0, 0.0], dtype=torch.float64)

    def params(self) -> dict[str, Any]:
        return {
            "n_steps": self.n_steps,
            "method": self.method,
            "baseline": json_safe(self.baseline),
            "baselines": json_safe(self.baselines),
            "sample_baselines": json_safe(self.sample_baselines),
        }

    def check_inputs(self, inputs: Tensor) -> None:
        check_sample_baselines_fit(self.id, self.sample_baselines, inputs)

    def works_in_blocks(self) -> str | None:
        return None if self.sample_baselines is None else "sample_baselines are rows of one explain() call"

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        paths = 1 if self.baselines is None else len(self.baselines)
        return Cost(items=paths * (self.n_steps + 2))

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets, mask = batch.inputs, batch.targets, batch.mask
        n, t = targets.shape
        refs = reference_set(
            self.id, self.baseline, self.baselines, x, sample_baselines=self.sample_baselines, position=batch.position
        )  # (B, n, C, H, W)
        paths = refs.shape[0]
        # Item i is point i % (n_steps + 2) of the path from reference i // (n_steps + 2).
        path_of = batch.item.to(x.device) // (self.n_steps + 2)
        item = batch.item.to(x.device) % (self.n_steps + 2)
        sample = batch.sample.to(x.device)
        ref = refs[path_of, sample]  # one row per pair of the pass
        diff = x[sample] - ref
        alpha = self._alpha.to(device=x.device, dtype=x.dtype)[item]
        weight = self._weight.to(device=x.device, dtype=x.dtype)[item]
        if self.baselines is not None:
            # A set: each path's share of the mean, times its own (x - reference), now.
            weight = weight / paths
        shape = (-1,) + (1,) * (x.dim() - 1)
        total = zero_maps(x, t)
        delta = x.new_zeros((n, t))
        outputs = None
        path = (item < self.n_steps).nonzero().flatten()
        if len(path):
            p, s, w = path, sample[path], weight[path]
            wanted = mask[s]  # (pairs, T): which targets each path point serves
            with torch.enable_grad():
                points = (ref[p] + alpha[p].view(shape) * diff[p]).requires_grad_(True)
                out = model(points)
                columns = [c for c in range(t) if wanted[:, c].any()]
                # The targets share the pass's forward: one backward each.
                for i, c in enumerate(columns):
                    rows = wanted[:, c].nonzero().flatten()
                    score = out[rows, targets[s[rows], c]].sum()
                    (grad,) = torch.autograd.grad(score, points, retain_graph=i < len(columns) - 1, **UNUSED_IS_ZERO)
                    contribution = grad[rows] * w[rows].view(shape)
                    if self._difference_in_pass:
                        contribution = contribution * diff[p[rows]]
                    total[:, c].index_add_(0, s[rows], contribution)
            outputs = x.new_full((n, out.shape[1]), float("nan"))  # the inputs' logits come from the ends
        # The input once (with the first path), every reference.
        ends = ((item == self.n_steps) & (path_of == 0) | (item == self.n_steps + 1)).nonzero().flatten()
        if len(ends):
            s = sample[ends]
            with torch.no_grad():
                out = model(ref[ends] + alpha[ends].view(shape) * diff[ends])
            # Completeness: delta = sum(maps) - (f(x) - mean f(reference)); the sum is added in finish().
            # (Built in the outputs' dtype: torch.where on two Python floats would round 1/B to float32.)
            sign = out.new_full((len(ends), 1), 1.0 / paths)
            sign[item[ends] == self.n_steps] = -1.0
            delta.index_add_(0, s, sign * out.gather(1, targets[s]))
            outputs = x.new_full((n, out.shape[1]), float("nan"))
            is_input = item[ends] == self.n_steps
            outputs[s[is_input]] = out[is_input]
        return Attribution(total, delta=delta, outputs=outputs)

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        if not self._difference_in_pass:
            maps = total.maps * (inputs - baseline_like(self.id, self.baseline, inputs)).unsqueeze(1)
        else:  # each pair's contributions carry their own difference already
            maps = total.maps
        return Attribution(maps, delta=maps.flatten(2).sum(2) + total.delta)


def _quadrature(method: str, n: int) -> tuple[list[float], list[float]]:
    """The rule's weights and path points on [0, 1], in float64.

    Gauss-Legendre's come from captum (numpy's float64). captum builds the Riemann points with
    float32 ``torch.linspace``, 5e-8 off in a float64 run, so they are made here in float64, at the
    same places; and captum weighs the trapezoid's n points, 1/(n-1) apart, by 1/n, so its weights
    add up to (n-1)/n and even a linear model misses completeness by 1/n: here they are the
    trapezoid rule's, 1/(n-1) (halved at the ends).
    """
    if method == "gausslegendre":
        step_sizes, alphas = (f(n) for f in approximation_parameters(method))
        return list(step_sizes), list(alphas)
    first, last = {
        "riemann_trapezoid": (0.0, 1.0),
        "riemann_left": (0.0, 1 - 1 / n),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
        "riemann_right": (1 / n, 1.0),
    }[method]
    alphas = torch.linspace(first, last, n, dtype=torch.float64).tolist()
    if method != "riemann_trapezoid":
        return [1 / n] * n, alphas
    step_sizes = [1 / (n - 1)] * n
    step_sizes[0] = step_sizes[-1] = 0.5 / (n - 1)
    return step_sizes, alphas
