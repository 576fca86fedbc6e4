"""Integrated gradients (Sundararajan et al., 2017), with captum's quadrature rules."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from ..errors import InvalidParameterError
from .base import (
    Attribution,
    Cost,
    SharesTargets,
    baseline_like,
    check_baseline,
    check_positive_int,
    json_safe,
)

_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


class IntegratedGradients(SharesTargets):
    """Path integral of gradients from a baseline to the input; ``n_steps`` points on the path."""

    id: ClassVar[str] = "integrated_gradients"
    needs_baseline: ClassVar[bool] = True
    multiplies_by_inputs: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True

    def __init__(self, *, n_steps: int = 50, method: str = "gausslegendre", baseline: Any = 0.0) -> None:
        self.n_steps = check_positive_int(self.id, "n_steps", n_steps)
        if method not in _METHODS:
            raise InvalidParameterError(
                f"integrated_gradients: method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}."
            )
        self.method = method
        self.baseline = check_baseline(self.id, baseline)

    def params(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "method": self.method, "baseline": json_safe(self.baseline)}

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        return Cost(forward=self.n_steps + 2, backward=self.n_steps)

    def attribute_many(self, model, inputs, targets, mask, *, batch_size=None) -> Attribution:
        n, t = targets.shape
        ref = baseline_like(self.id, self.baseline, inputs)
        diff = inputs - ref
        step_sizes, alphas = (f(self.n_steps) for f in approximation_parameters(self.method))
        # Path points in step-major order, as captum builds them, made a chunk at a time.
        alpha = torch.tensor(alphas, dtype=inputs.dtype, device=inputs.device).repeat_interleave(n)
        weight = torch.tensor(step_sizes, dtype=inputs.dtype, device=inputs.device).repeat_interleave(n)
        sample = torch.arange(n, device=inputs.device).repeat(self.n_steps)
        shape = (-1,) + (1,) * (inputs.dim() - 1)
        total = torch.zeros((n, t, *inputs.shape[1:]), dtype=inputs.dtype, device=inputs.device)
        step = batch_size or len(alpha)
        for start in range(0, len(alpha), step):
            a, w, r = alpha[start : start + step], weight[start : start + step], sample[start : start + step]
            wanted = mask[r]  # (chunk, T): which targets each path point serves
            columns = [c for c in range(t) if wanted[:, c].any()]
            with torch.enable_grad():
                points = (ref[r] + a.view(shape) * diff[r]).requires_grad_(True)
                out = model(points)
                # The targets share the chunk's forward pass: one backward each.
                for i, c in enumerate(columns):
                    rows = wanted[:, c].nonzero().flatten()
                    score = out[rows, targets[r[rows], c]].sum()
                    (grad,) = torch.autograd.grad(score, points, retain_graph=i < len(columns) - 1)
                    total[:, c].index_add_(0, r[rows], grad[rows] * w[rows].view(shape))
        maps = total * diff.unsqueeze(1)
        maps[~mask] = float("nan")
        with torch.no_grad():
            both = batch_size is None or 2 * n <= batch_size
            outputs = model(torch.cat([inputs, ref])) if both else torch.cat([model(inputs), model(ref)])
            rows = torch.arange(n, device=inputs.device).unsqueeze(1)
            expected = outputs[:n][rows, targets] - outputs[n:][rows, targets]
            delta = maps.flatten(2).sum(2) - expected
        return Attribution(maps, delta=delta, outputs=outputs[:n])
