"""Integrated gradients (Sundararajan et al., 2017), via captum."""

from __future__ import annotations

from typing import Any, ClassVar

from captum.attr import IntegratedGradients as _CaptumIG
from torch import Tensor, nn

from ..errors import InvalidParameterError
from .base import Attributor, Cost, baseline_like, check_baseline, check_positive_int, json_safe

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
        return Cost(forward=self.n_steps, backward=self.n_steps)

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None):
        maps, delta = _CaptumIG(model).attribute(
            inputs,
            baselines=baseline_like(self.id, self.baseline, inputs),
            target=target,
            n_steps=self.n_steps,
            method=self.method,
            internal_batch_size=batch_size,
            return_convergence_delta=True,
        )
        return maps, delta
