"""Similarity of two sets of maps, row by row: Spearman rank correlation and SSIM, vectorised in torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def average_ranks(values: Tensor) -> Tensor:
    """Ranks along each row (P, F), ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    p, n = values.shape
    order = torch.argsort(values, dim=1, stable=True)
    ordered = values.gather(1, order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    position = torch.arange(n, device=values.device, dtype=torch.float64).expand(p, n)
    if bool(starts.all()):  # no ties (continuous maps): the rank is the position in the order
        return torch.empty_like(position).scatter_(1, order, position + 1)
    group = starts.cumsum(1) - 1
    first = torch.full((p, n), float(n), dtype=torch.float64, device=values.device)
    first = first.scatter_reduce(1, group, position, reduce="amin", include_self=True)
    last = torch.zeros((p, n), dtype=torch.float64, device=values.device)
    last = last.scatter_reduce(1, group, position, reduce="amax", include_self=True)
    mean_rank = ((first + last) / 2 + 1).gather(1, group)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def centred_ranks(a: Tensor) -> Tensor:
    """Average ranks of each row of ``a`` minus their mean: what :func:`spearman` correlates."""
    ranks = average_ranks(a.flatten(1).to(torch.float64))
    return ranks - ranks.mean(1, keepdim=True)


def spearman(a: Tensor, b: Tensor, *, ranked_a: Tensor | None = None) -> Tensor:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` (P, F) -> (P,).

    NaN where a row is constant (its ranks have no spread), as scipy. ``ranked_a`` is
    ``centred_ranks(a)``, for callers that compare one ``a`` with many ``b``.
    """
    ra = ranked_a if ranked_a is not None else centred_ranks(a)
    rb = centred_ranks(b)
    spread = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(spread > 0, (ra * rb).sum(1) / spread, torch.nan)


def _box_mean(t: Tensor, window: int) -> Tensor:
    """The mean over each ``window`` x ``window`` square that fits in the image, from an integral image."""
    c = F.pad(t, (1, 0, 1, 0)).cumsum(-2).cumsum(-1)
    w = window
    return (c[..., w:, w:] - c[..., :-w, w:] - c[..., w:, :-w] + c[..., :-w, :-w]) / (w * w)


def ssim(a: Tensor, b: Tensor, *, window: int = 7) -> Tensor:
    """Structural similarity of each pair of 2-D maps (P, H, W) -> (P,), as ``skimage.metrics.structural_similarity``
    with its defaults (a uniform ``window`` x ``window`` filter, sample covariances, K1 = 0.01,
    K2 = 0.03) and the data range of the two maps together (as Quantus)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    both = torch.cat([a, b], 1).flatten(1)
    data_range = (both.amax(1) - both.amin(1)).view(-1, 1, 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # Local means of the maps centred on their own means: the integral image then sums small
    # numbers, and variances need no difference of large ones.
    ma, mb = a.mean((1, 2), keepdim=True), b.mean((1, 2), keepdim=True)
    ca, cb = a - ma, b - mb
    local = _box_mean(torch.stack([ca, cb, ca * ca, cb * cb, ca * cb], 1), window)
    ua, ub, uaa, ubb, uab = local.unbind(1)
    norm = window * window / (window * window - 1)
    va, vb, vab = norm * (uaa - ua * ua), norm * (ubb - ub * ub), norm * (uab - ua * ub)
    ux, uy = ua + ma, ub + mb  # the crop skimage takes: only windows inside the image
    s = ((2 * ux * uy + c1) * (2 * vab + c2)) / ((ux * ux + uy * uy + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)
