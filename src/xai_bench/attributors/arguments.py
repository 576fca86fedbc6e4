"""Parameter checks shared by the built-in methods (plugins may use them too)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..core.errors import InvalidParameterError


def check_pair(method: str, name: str, value: Any) -> tuple[int, int]:
    """Accept an int or an (h, w) pair of positive ints."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise InvalidParameterError(
            f"{method}: {name} must be a positive int or a pair (height, width) of them, got {value!r}."
        )
    return int(pair[0]), int(pair[1])


def check_baseline(method: str, value: Any) -> float | Tensor:
    """Accept a finite number or a finite tensor broadcastable to one input (C, H, W)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidParameterError(f"{method}: baseline must be finite, got {value!r}.")
        return float(value)
    if isinstance(value, Tensor):
        if not torch.isfinite(value).all():
            raise InvalidParameterError(f"{method}: baseline tensor has NaN or Inf values.")
        if value.dim() == 4 and value.shape[0] != 1:
            raise InvalidParameterError(
                f"{method}: a baseline tensor is one reference image, shape (C, H, W) or (1, C, H, W); "
                f"got {tuple(value.shape)}."
            )
        return value.detach()
    raise InvalidParameterError(
        f"{method}: baseline must be a number or a tensor of shape (C, H, W), got {type(value).__name__}."
    )


def baseline_like(method: str, baseline: float | Tensor, inputs: Tensor) -> Tensor:
    """Broadcast a validated baseline to ``inputs``' shape, device and dtype."""
    if isinstance(baseline, float):
        return torch.full_like(inputs, baseline)
    ref = baseline.to(device=inputs.device, dtype=inputs.dtype)
    if ref.dim() == 3:
        ref = ref.unsqueeze(0)
    try:
        return ref.expand_as(inputs).contiguous()
    except RuntimeError:
        raise InvalidParameterError(
            f"{method}: baseline of shape {tuple(baseline.shape)} does not broadcast to inputs of "
            f"shape {tuple(inputs.shape[1:])} per sample."
        ) from None
