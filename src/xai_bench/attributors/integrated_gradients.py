"""Integrated gradients (Sundararajan et al., 2017), with captum's quadrature rules."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor, nn

from ..errors import InvalidParameterError
from .base import (
    Attribution,
    Attributor,
    Cost,
    baseline_like,
    check_baseline,
    check_positive_int,
    json_safe,
    select,
)

_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


class IntegratedGradients(Attributor):
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

    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None
    ) -> Attribution:
        n = inputs.shape[0]
        ref = baseline_like(self.id, self.baseline, inputs)
        diff = inputs - ref
        step_sizes, alphas = (f(self.n_steps) for f in approximation_parameters(self.method))
        # Path points in step-major order, as captum builds them: (steps * n, C, H, W), lazily per chunk.
        alpha = torch.tensor(alphas, dtype=inputs.dtype, device=inputs.device).repeat_interleave(n)
        weight = torch.tensor(step_sizes, dtype=inputs.dtype, device=inputs.device).repeat_interleave(n)
        rows = torch.arange(n, device=inputs.device).repeat(self.n_steps)
        total = torch.zeros_like(inputs)
        step = batch_size or len(alpha)
        for start in range(0, len(alpha), step):
            a, w, r = alpha[start : start + step], weight[start : start + step], rows[start : start + step]
            shape = (-1,) + (1,) * (inputs.dim() - 1)
            with torch.enable_grad():
                points = (ref[r] + a.view(shape) * diff[r]).requires_grad_(True)
                (grad,) = torch.autograd.grad(select(model(points), target[r]).sum(), points)
            total.index_add_(0, r, grad * w.view(shape))
        maps = total * diff
        with torch.no_grad():
            ends = torch.cat([inputs, ref]) if batch_size is None or 2 * n <= batch_size else None
            outputs = model(ends) if ends is not None else torch.cat([model(inputs), model(ref)])
            expected = select(outputs[:n], target) - select(outputs[n:], target)
            delta = maps.flatten(1).sum(1) - expected
        return Attribution(maps, delta=delta, outputs=outputs[:n])
