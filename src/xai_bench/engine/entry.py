"""The engine's two entries: forward passes (scores, metrics, profiles) and a method's passes (maps).

Each owns plan and run: it measures what an image costs, caps the pass size by the budget (or
takes the fixed one), tunes under the cap, feeds the passes and backs off when memory runs out.
Callers say what to compute and with which budget, never how to cut it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attributors.base import Attributor
from .attribution import MethodResult, attribute_all, work_samples
from .runner import plan_forward, plan_sizer, run_passes
from .tuning import PassSizer


@dataclass(frozen=True)
class Budget:
    """How passes are sized: a fixed number of images per pass (None: tuned) under ``bytes`` of memory."""

    fixed_images: int | None
    bytes: int


def forward_passes(
    model: nn.Module,
    total: int,
    images: Callable[[int, int], Tensor],
    *,
    owner: nn.Module,
    name: str,
    example: Tensor,
    budget: Budget,
    consume: Callable[[Tensor, int, int], None],
    probing: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """Run ``model`` without autograd on ``total`` images, ``images(start, count)`` at a time, and give each
    pass's outputs to ``consume(outputs, start, count)``.

    The pass size is planned on ``example`` (one image) and remembered on ``owner`` (the user's model)
    under ``name``; the planning pass runs inside ``probing()`` (a profile's taps stay off). ``consume``
    must keep nothing of a pass that raised: a pass that runs out of memory is retried smaller.
    """
    with probing():
        sizer = plan_forward(
            owner=owner, name=name, model=model, example=example, fixed_images=budget.fixed_images,
            budget=budget.bytes, total=total,
        )  # fmt: skip

    def do_pass(start: int, count: int) -> None:
        with torch.no_grad():
            consume(model(images(start, count)), start, count)

    run_passes(total, sizer, do_pass, example.device)


def attribute(
    attributor: Attributor,
    model: nn.Module,
    inputs: Tensor,
    index: Tensor,
    mask: Tensor,
    *,
    owner: nn.Module,
    key: Hashable,
    budget: Budget,
    keys: Tensor | None = None,
    positions: Tensor | None = None,
    on_pairs: Callable[[int], None] | None = None,
    who: str | None = None,
    map_shape: tuple[int, ...] | None = None,
) -> tuple[MethodResult, PassSizer]:
    """``attributor``'s maps on ``model`` (its prepared view) of the pairs ``mask`` of classes ``index`` (N, T).

    Passes are planned on ``inputs``' first image, remembered on ``owner`` under ``key``, and fed
    in the order an uninterrupted call would take; returns the result and the sizer that ran it
    (the pass size it settled on, and its cap). ``map_shape``: the maps' shape per pair where it is
    not the inputs' (maps of a layer).
    """
    cost = attributor.cost(tuple(inputs.shape[1:]))
    sizer = plan_sizer(
        owner=owner, key=key, model=model, example=inputs, images_per_item=cost.images, backward=cost.backward,
        fixed_images=budget.fixed_images, budget=budget.bytes, total=len(work_samples(mask.cpu())) * cost.items,
        name=attributor.id,
    )  # fmt: skip
    result = attribute_all(
        attributor,
        model,
        inputs,
        index,
        mask,
        sizer,
        keys=keys,
        positions=positions,
        on_pairs=on_pairs,
        who=who,
        map_shape=map_shape,
    )
    return result, sizer
