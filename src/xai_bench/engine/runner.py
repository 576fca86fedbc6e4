"""Feed passes to a method, a profile or a metric: time them for tuning, back off when memory runs out."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

import torch
from torch import Tensor, nn

from ..core.errors import warn
from . import planner
from .memory import bytes_per_image, image_cost, images_per_pass, images_within, is_out_of_memory
from .tuning import CPU_START_IMAGES, PassSizer, measurements


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a pass's time is its own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan_sizer(
    *,
    owner: nn.Module,
    key: Hashable,
    model: nn.Module,
    example: Tensor,
    images_per_item: int,
    backward: bool,
    fixed_images: int | None,
    budget: int,
    total: int,
    name: str,
) -> PassSizer:
    """A :class:`PassSizer` for ``total`` pairs of ``images_per_item`` images each through ``model``.

    The memory cap comes from a measured forward pass of ``model`` on ``example``; measurements
    are remembered on ``owner`` (the user's model) under ``key`` and the cap.
    """
    device = example.device
    if fixed_images is not None:
        fixed = planner.pairs_per_pass(fixed_images, images_per_item)
        return PassSizer(cap=fixed, fixed=fixed, total=total, known=measurements(owner, key), start=fixed)
    measured = image_cost(model, example, images=images_per_item)
    cap_images = images_per_pass(measured, budget, backward=backward, device=device)
    # One rule for every method: warn when the budget cannot hold the smallest pass (one item).
    if images_within(measured, budget, backward=backward) < images_per_item:
        need = images_per_item * bytes_per_image(measured, backward=backward)
        warn(
            f"{name}: its smallest pass ({images_per_item} image{'s' if images_per_item > 1 else ''}, about "
            f"{need / 2**20:.1f} MiB) is larger "
            f"than memory_budget ({budget / 2**20:.1f} MiB); running it anyway. Raise the budget or use smaller "
            "images to stay within it.",
        )
    cap = planner.pairs_per_pass(cap_images, images_per_item)
    start = planner.pairs_per_pass(CPU_START_IMAGES, images_per_item) if device.type == "cpu" else cap
    # Keyed on the cap the budget gives, not on the budget: the default budget follows free memory,
    # which moves a little between calls without changing what fits.
    return PassSizer(cap=cap, fixed=None, total=total, known=measurements(owner, (*key, cap)), start=start)


def plan_forward(
    *,
    owner: nn.Module,
    name: str,
    model: nn.Module,
    example: Tensor,
    fixed_images: int | None,
    budget: int,
    total: int,
) -> PassSizer:
    """A :class:`PassSizer` for ``total`` forward-only passes of one image each (scores, profiles)."""
    key = (name, tuple(example.shape[1:]), example.dtype, str(example.device))
    return plan_sizer(
        owner=owner, key=key, model=model, example=example, images_per_item=1, backward=False,
        fixed_images=fixed_images, budget=budget, total=total, name=name,
    )  # fmt: skip


def run_passes(total: int, sizer: PassSizer, do_pass: Callable[[int, int], None], device: torch.device) -> None:
    """Call ``do_pass(start, size)`` until ``total`` pairs are done, sizes from ``sizer``.

    ``do_pass`` must keep nothing of a pass that raised: a pass that runs out of memory is
    retried at half the size, and finished passes are kept.
    """
    cursor = 0
    while cursor < total:
        wanted = sizer.size()
        size = min(wanted, total - cursor)
        synchronize(device)
        began = time.perf_counter()
        try:
            do_pass(cursor, size)
        except Exception as exc:
            if not is_out_of_memory(exc) or not sizer.shrink(wanted, size):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        synchronize(device)
        if size == wanted:  # a pass cut short by the end of the work is no measurement
            sizer.record(size, time.perf_counter() - began)
        cursor += size
