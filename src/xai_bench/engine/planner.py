"""Split (samples x expansion items) into passes; pure functions of the work and the pass size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Slice:
    """Pairs ``[start, start + size)`` of the work in sample-major order, as the samples they touch.

    ``samples`` are the distinct work positions (sorted), ``sample`` (P,) each pair's position in
    ``samples`` and ``item`` (P,) its index on the expansion axis.
    """

    samples: Tensor
    sample: Tensor
    item: Tensor


def pairs(n_samples: int, items: int) -> int:
    """Number of (sample, item) pairs in the work."""
    return n_samples * items


def pairs_per_pass(images: int, images_per_item: int) -> int:
    """Pairs that fit in a pass of ``images`` (never splitting an item's images), at least one."""
    return max(1, images // images_per_item)


def take(start: int, size: int, n_samples: int, items: int) -> Slice:
    """The pass holding pairs ``[start, start + size)``: a sample's items stay in order, samples follow."""
    end = min(start + size, pairs(n_samples, items))
    flat = torch.arange(start, end)
    sample, item = flat // items, flat % items
    samples, position = torch.unique_consecutive(sample, return_inverse=True)
    return Slice(samples, position, item)
