"""Localisation: how much of a map falls on the ground-truth mask of its target (channel-summed maps)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.errors import InvalidParameterError
from .base import Context, Metric, Pairs, Score


def _flag(metric: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(f"{metric}: {name} must be True or False, got {value!r}.")
    return value


def _empty_to_nan(values: Tensor, masks: Tensor) -> Tensor:
    """NaN where a mask is empty: there is nothing to point at."""
    return torch.where(masks.flatten(1).any(1), values, torch.full_like(values, math.nan))


class _MaskMetric(Metric):
    needs_masks: ClassVar[bool] = True

    def _inputs(self, pairs: Pairs) -> tuple[Tensor, Tensor]:
        maps = pairs.reduced()
        if getattr(self, "abs", False):
            maps = maps.abs()
        assert pairs.masks is not None
        return maps.flatten(1), pairs.masks.flatten(1)


class PointingGame(_MaskMetric):
    """1 when the map's maximum lies on the mask (within ``tolerance`` pixels), else 0 (Zhang et al., 2018).

    Ties for the maximum count as a hit if any of them is on the mask (as Quantus). Zhang et al.
    allow 15 pixels of tolerance; the default 0 is Quantus's ``PointingGame``. ``abs`` scores |map|.
    """

    id: ClassVar[str] = "pointing_game"

    def __init__(self, *, tolerance: int = 0, abs: bool = False) -> None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise InvalidParameterError(f"pointing_game: tolerance must be an int >= 0 (pixels), got {tolerance!r}.")
        self.tolerance = tolerance
        self.abs = _flag(self.id, "abs", abs)

    def score(self, pairs: Pairs, context: Context) -> Score:
        maps, masks = self._inputs(pairs)
        target = pairs.masks
        assert target is not None
        if self.tolerance:
            r = self.tolerance
            grid = torch.arange(-r, r + 1, dtype=torch.float64)
            disc = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= r * r).to(torch.float64)[None, None]
            near = F.conv2d(target[:, None].to(torch.float64), disc, padding=r)[:, 0] > 0
            masks = near.flatten(1)
        peak = maps == maps.max(1, keepdim=True).values
        hit = (peak & masks).any(1).to(torch.float64)
        return Score(_empty_to_nan(hit, target))


class EnergyPointingGame(_MaskMetric):
    """The share of the map's positive energy on the mask: sum over the mask of max(map, 0) over its
    sum over the image (Score-CAM, Wang et al., 2020). Equal by definition to ``relevance_mass`` with
    ``positive=True`` (Arras et al.), which is also offered with Quantus's definition."""

    id: ClassVar[str] = "energy_pointing_game"

    def score(self, pairs: Pairs, context: Context) -> Score:
        maps, masks = self._inputs(pairs)
        energy = maps.clamp_min(0)
        total = energy.sum(1)
        inside = (energy * masks).sum(1)
        share = torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), math.nan)
        assert pairs.masks is not None
        return Score(_empty_to_nan(share, pairs.masks))


class RelevanceMass(_MaskMetric):
    """Relevance on the mask over relevance in the image (Arras et al., 2022).

    ``positive=True`` (Arras et al.) counts positive relevance only; ``positive=False`` takes the
    map as it is, Quantus's ``RelevanceMassAccuracy`` (``abs=True`` as its ``abs``).
    """

    id: ClassVar[str] = "relevance_mass"

    def __init__(self, *, positive: bool = True, abs: bool = False) -> None:
        self.positive = _flag(self.id, "positive", positive)
        self.abs = _flag(self.id, "abs", abs)

    def score(self, pairs: Pairs, context: Context) -> Score:
        maps, masks = self._inputs(pairs)
        if self.positive:
            maps = maps.clamp_min(0)
        total = maps.sum(1)
        share = torch.where(total != 0, (maps * masks).sum(1) / torch.where(total != 0, total, 1.0), math.nan)
        assert pairs.masks is not None
        return Score(_empty_to_nan(share, pairs.masks))


def _top(maps: Tensor, k: Tensor) -> Tensor:
    """(P, F) booleans: the ``k[p]`` largest values of each row (ties broken by position)."""
    order = torch.argsort(maps, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(maps.shape[1]).expand_as(order).contiguous())
    return rank < k[:, None]


class RelevanceRank(_MaskMetric):
    """The share of the K most relevant pixels that lie on the mask, K its size (Arras et al., 2022;
    Quantus's ``RelevanceRankAccuracy``)."""

    id: ClassVar[str] = "relevance_rank"

    def __init__(self, *, abs: bool = False) -> None:
        self.abs = _flag(self.id, "abs", abs)

    def score(self, pairs: Pairs, context: Context) -> Score:
        maps, masks = self._inputs(pairs)
        size = masks.sum(1)
        hits = (_top(maps, size) & masks).sum(1).to(torch.float64)
        share = hits / size.clamp_min(1)
        assert pairs.masks is not None
        return Score(_empty_to_nan(share, pairs.masks))


class TopKIoU(_MaskMetric):
    """Intersection over union of the top ``fraction`` of pixels by relevance with the mask."""

    id: ClassVar[str] = "top_k_iou"

    def __init__(self, *, fraction: float = 0.1, abs: bool = False) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise InvalidParameterError(f"top_k_iou: fraction must be in (0, 1], got {fraction!r}.")
        self.fraction = float(fraction)
        self.abs = _flag(self.id, "abs", abs)

    def score(self, pairs: Pairs, context: Context) -> Score:
        maps, masks = self._inputs(pairs)
        k = max(1, math.ceil(self.fraction * maps.shape[1]))
        top = _top(maps, torch.full((maps.shape[0],), k))
        iou = (top & masks).sum(1).to(torch.float64) / (top | masks).sum(1).to(torch.float64)
        assert pairs.masks is not None
        return Score(_empty_to_nan(iou, pairs.masks))


class TopKIntersection(_MaskMetric):
    """|top-k pixels ∩ mask| / k for ``k`` pixels (Theiner et al., 2021; Quantus's ``TopKIntersection``);
    ``concept_influence`` divides by the mask's share of the image."""

    id: ClassVar[str] = "top_k_intersection"

    def __init__(self, *, k: int = 1000, concept_influence: bool = False, abs: bool = False) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidParameterError(f"top_k_intersection: k must be a positive number of pixels, got {k!r}.")
        self.k = k
        self.concept_influence = _flag(self.id, "concept_influence", concept_influence)
        self.abs = _flag(self.id, "abs", abs)

    def applies_to(self, pairs: Pairs) -> str | None:
        pixels = pairs.maps.shape[-2] * pairs.maps.shape[-1]
        return None if self.k <= pixels else f"k={self.k} is more than the {pixels} pixels of a map"

    def score(self, pairs: Pairs, context: Context) -> Score:
        maps, masks = self._inputs(pairs)
        top = _top(maps, torch.full((maps.shape[0],), self.k))
        share = (top & masks).sum(1).to(torch.float64) / self.k
        if self.concept_influence:
            share = share * maps.shape[1] / masks.sum(1).clamp_min(1)
        assert pairs.masks is not None
        return Score(_empty_to_nan(share, pairs.masks))
