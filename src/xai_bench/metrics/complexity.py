"""Complexity metrics: how concentrated a map is.

Both read a map as Quantus 0.6.0 does by default: its explanation functions sum a (C, H, W)
attribution over the channels (signed), its complexity metrics then divide the map by its largest
absolute value (``normalise_by_max``) and take absolute values. So a map whose channels cancel counts
as zero there, and the scores are those of ``|sum over c of map[c]|`` (H, W).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..core.errors import InvalidParameterError
from .base import Context, Metric, Pairs, Score


def magnitudes(pairs: Pairs) -> Tensor:
    """|channel-summed map| / its largest value, flattened: (P, H * W) in float64; a map of zeros stays zero."""
    values = pairs.reduced().flatten(1).abs()
    largest = values.amax(1, keepdim=True)
    return values / torch.where(largest > 0, largest, torch.ones_like(largest))


def gini(values: Tensor) -> Tensor:
    """The Gini index of each row of non-negative ``values`` (P, n): 0 if all are equal, 1 - 1/n if one holds all."""
    n = values.shape[1]
    ordered = values.sort(1).values
    weights = 2 * torch.arange(1, n + 1, dtype=values.dtype, device=values.device) - n - 1
    return (ordered * weights).sum(1) / (n * ordered.sum(1))


class Sparseness(Metric):
    """The Gini index of the map's magnitudes (Chalasani et al., 2020; Quantus's ``Sparseness``):
    near 1 when a few pixels hold all the relevance, 0 when it is spread evenly (higher is better).

    With ``a`` (n,) the magnitudes of the channel-summed map divided by their largest, plus ``eps``
    (as Quantus adds 1e-7) and sorted ascending, the value is
    ``sum_i (2 i - n - 1) a_i / (n sum_i a_i)``, i = 1..n. A one-hot map scores
    ``(n - 1) / (n (1 + n eps))`` (``1 - 1/n`` with ``eps=0``), a constant map and a map of zeros
    0 (NaN with ``eps=0``, which leaves the exact Gini index). Quantus's default divides by the largest
    magnitude of the whole batch, which changes its scores through ``eps``: the same as here for a
    batch of one map. Value (P,) per pair.
    """

    id: ClassVar[str] = "sparseness"

    def __init__(self, *, eps: float = 1e-7) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
            raise InvalidParameterError(
                f"sparseness: eps (added to every magnitude, as Quantus adds 1e-7) must be a finite number >= 0, "
                f"got {eps!r}; use 0 for the exact Gini index."
            )
        self.eps = float(eps)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def score(self, pairs: Pairs, context: Context) -> Score:
        return Score(gini(magnitudes(pairs) + self.eps))


class Complexity(Metric):
    """The entropy of the map's magnitudes as a distribution (Bhatt et al., 2020; Quantus's
    ``Complexity``): log(n) when relevance is spread evenly over the n pixels, 0 when one pixel holds
    all of it (lower is better).

    With ``p`` (n,) the magnitudes of the channel-summed map divided by their sum, the value is
    ``-sum_i p_i log p_i`` (natural log, 0 log 0 = 0). Quantus computes ``log(p_i + 1e-12)``, which
    is lower by at most ``n * 1e-12``. A map of zeros has no distribution: NaN.
    """

    id: ClassVar[str] = "complexity"
    higher_is_better: ClassVar[bool] = False

    def __init__(self) -> None:
        """No parameters; defined so that the registry names unknown ones (it reads the signature)."""

    def params(self) -> dict[str, Any]:
        return {}

    def score(self, pairs: Pairs, context: Context) -> Score:
        values = magnitudes(pairs)
        p = values / values.sum(1, keepdim=True)
        return Score(-torch.special.xlogy(p, p).sum(1))


#: the classes this module registers as built-ins
COMPLEXITY_METRICS: tuple[type[Metric], ...] = (Sparseness, Complexity)
