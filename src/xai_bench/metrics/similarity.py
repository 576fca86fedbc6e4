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


def ssim(a: Tensor, b: Tensor, *, window: int = 7) -> Tensor:
    """Structural similarity of each pair of 2-D maps (P, H, W) -> (P,), as ``skimage.metrics.structural_similarity``
    with its defaults (a uniform ``window`` x ``window`` filter, sample covariances, K1 = 0.01,
    K2 = 0.03) and the data range of the two maps together (as Quantus)."""
    a, b = a.to(torch.float64)[:, None], b.to(torch.float64)[:, None]
    both = torch.cat([a, b], 1).flatten(1)
    data_range = (both.amax(1) - both.amin(1)).view(-1, 1, 1, 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    # The five local means in one filter pass; the valid part only, as skimage crops the border.
    ux, uy, uxx, uyy, uxy = F.avg_pool2d(torch.cat([a, b, a * a, b * b, a * b], 1), window, stride=1).unbind(1)
    ux, uy, uxx, uyy, uxy = (t[:, None] for t in (ux, uy, uxx, uyy, uxy))
    norm = window * window / (window * window - 1)
    vx, vy = norm * (uxx - ux * ux), norm * (uyy - uy * uy)
    vxy = norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
