"""Integrated gradients (Sundararajan et al., 2017), with captum's quadrature rules."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from ..core.checks import json_safe, positive_int
from ..core.errors import InvalidParameterError
from .arguments import baseline_like, check_baseline
from .base import Attribution, Attributor, Batch, Cost, zero_maps

_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


class IntegratedGradients(Attributor):
    """Path integral of gradients from a baseline to the input; ``n_steps`` points on the path.

    ``method`` is captum's quadrature rule; every rule's weights add up to one (captum's
    ``riemann_trapezoid`` weights add up to (n-1)/n: here they are the trapezoid rule's).

    The expansion axis holds the ``n_steps`` path points and then the input and the baseline
    themselves, whose forward passes give the completeness delta and the model's scores.
    """

    id: ClassVar[str] = "integrated_gradients"
    needs_baseline: ClassVar[bool] = True
    multiplies_by_inputs: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True
    reports_outputs: ClassVar[bool] = True

    def __init__(self, *, n_steps: int = 50, method: str = "gausslegendre", baseline: Any = 0.0) -> None:
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
        step_sizes, alphas = (f(self.n_steps) for f in approximation_parameters(self.method))
        if method == "riemann_trapezoid":
            # captum weighs n points spaced 1/(n-1) apart by 1/n, so the weights add up to (n-1)/n and
            # even a linear model misses completeness by 1/n; the trapezoid rule's weights are 1/(n-1).
            step_sizes = [1 / (self.n_steps - 1)] * self.n_steps
            step_sizes[0] = step_sizes[-1] = 0.5 / (self.n_steps - 1)
        # Items n_steps and n_steps + 1 are the input (alpha 1) and the baseline (alpha 0), weight 0.
        self._alpha = torch.tensor([*alphas, 1.0, 0.0], dtype=torch.float64)
        self._weight = torch.tensor([*step_sizes, 0.0, 0.0], dtype=torch.float64)

    def params(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "method": self.method, "baseline": json_safe(self.baseline)}

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        return Cost(items=self.n_steps + 2)

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        x, targets, mask = batch.inputs, batch.targets, batch.mask
        n, t = targets.shape
        ref = baseline_like(self.id, self.baseline, x)
        item = batch.item.to(x.device)
        sample = batch.sample.to(x.device)
        alpha = self._alpha.to(device=x.device, dtype=x.dtype)[item]
        weight = self._weight.to(device=x.device, dtype=x.dtype)[item]
        shape = (-1,) + (1,) * (x.dim() - 1)
        total = zero_maps(x, t)
        delta = x.new_zeros((n, t))
        outputs = None
        path = (item < self.n_steps).nonzero().flatten()
        if len(path):
            p, s, w = path, sample[path], weight[path]
            wanted = mask[s]  # (pairs, T): which targets each path point serves
            with torch.enable_grad():
                points = (ref[s] + alpha[p].view(shape) * (x[s] - ref[s])).requires_grad_(True)
                out = model(points)
                columns = [c for c in range(t) if wanted[:, c].any()]
                # The targets share the pass's forward: one backward each.
                for i, c in enumerate(columns):
                    rows = wanted[:, c].nonzero().flatten()
                    score = out[rows, targets[s[rows], c]].sum()
                    (grad,) = torch.autograd.grad(score, points, retain_graph=i < len(columns) - 1)
                    total[:, c].index_add_(0, s[rows], grad[rows] * w[rows].view(shape))
            outputs = x.new_full((n, out.shape[1]), float("nan"))  # the inputs' logits come from the ends
        ends = (item >= self.n_steps).nonzero().flatten()
        if len(ends):
            s = sample[ends]
            with torch.no_grad():
                out = model(ref[s] + alpha[ends].view(shape) * (x[s] - ref[s]))
            # Completeness: delta = sum(maps) - (f(x) - f(baseline)); the sum is added in finish().
            sign = torch.where(item[ends] == self.n_steps, -1.0, 1.0).to(out.dtype).view(-1, 1)
            delta.index_add_(0, s, sign * out.gather(1, targets[s]))
            outputs = x.new_full((n, out.shape[1]), float("nan"))
            is_input = item[ends] == self.n_steps
            outputs[s[is_input]] = out[is_input]
        return Attribution(total, delta=delta, outputs=outputs)

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        diff = inputs - baseline_like(self.id, self.baseline, inputs)
        maps = total.maps * diff.unsqueeze(1)
        return Attribution(maps, delta=maps.flatten(2).sum(2) + total.delta)
