"""Run one attributor over all (sample, target) pairs of a call, pass by pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..attributors.base import Attribution, Attributor, Batch, check_attribution
from ..core.errors import PluginError
from . import planner
from .runner import run_passes
from .tuning import PassSizer


@dataclass(frozen=True)
class MethodResult:
    """Final maps (N, T, C, H, W) (or (N, T, *map_shape) for maps of a layer) and deltas (N, T), NaN where no
    pair was computed, and the logits found."""

    maps: Tensor
    delta: Tensor | None
    outputs: Tensor | None  # (N, K), NaN rows where the method's passes did not compute them


def work_samples(mask: Tensor) -> Tensor:
    """Samples with at least one pair to compute, in order."""
    return mask.any(1).nonzero().flatten()


def attribute_all(
    attributor: Attributor,
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    mask: Tensor,
    sizer: PassSizer,
    *,
    keys: Tensor | None = None,
    positions: Tensor | None = None,
    on_pairs: Callable[[int], None] | None = None,
    who: str | None = None,
    map_shape: tuple[int, ...] | None = None,
) -> MethodResult:
    """Plan ``attributor``'s passes over the masked pairs, run them, add their contributions and finish.

    ``targets`` and ``mask`` are (N, T) on the inputs' device; ``keys`` (N,) the samples' keys
    and ``positions`` (N,) their rows in the call whose per-sample parameters the method holds
    (default: the rows of ``inputs``; see :class:`Batch`); ``on_pairs(k)`` reports k more (sample,
    target) maps done (a sample's maps are done with its last item); ``who`` names the method and its plugin in errors;
    ``map_shape`` is the maps' shape per pair where it is not the inputs' (a layer's output,
    :attr:`~xai_bench.attributors.base.Prepared.map_shape`).
    """
    n, t = targets.shape
    samples = work_samples(mask.cpu())
    items = attributor.cost(tuple(inputs.shape[1:])).items
    state: dict[str, Tensor | None] = {"maps": None, "delta": None, "outputs": None, "second": None, "sums": None}

    def do_pass(start: int, size: int) -> None:
        part_of = planner.take(start, size, len(samples), items)
        rows = samples[part_of.samples].to(inputs.device)
        key = keys[rows.cpu()] if keys is not None else None
        position = rows if positions is None else positions.to(rows.device)[rows]
        batch = Batch(inputs[rows], targets[rows], mask[rows], part_of.sample, part_of.item, position, key)
        part = check_attribution(attributor, attributor.attribute(model, batch), batch, who, map_shape=map_shape)
        # One item per sample and every sample in this pass: its results are the totals as they are.
        whole = items == 1 and len(rows) == n and state["maps"] is None
        for name in ("maps", "second", "sums"):
            total, value = state[name], getattr(part, name)
            if total is not None and value is not None and value.shape[1:] != total.shape[1:]:
                raise PluginError(
                    f"{who or f'method {attributor.id!r}'}: attribute() returned {name} {tuple(value.shape)} after "
                    f"passes of {tuple(total.shape[1:])} per sample; every pass must return the same shape."
                )
        _add(state, "maps", part.maps, rows, n, whole)
        if attributor.has_delta:
            _add(state, "delta", part.delta, rows, n, whole)
        for name in ("second", "sums"):
            if getattr(part, name) is not None:
                _add(state, name, getattr(part, name), rows, n, whole)
        if part.outputs is not None:
            if state["outputs"] is None:
                state["outputs"] = part.outputs.new_full((n, part.outputs.shape[1]), float("nan"))
            known = ~torch.isnan(part.outputs).any(1)
            state["outputs"][rows[known]] = part.outputs[known].detach()
        if on_pairs is not None:
            last = part_of.sample[part_of.item == items - 1]
            on_pairs(int(mask[rows[last.to(rows.device)]].sum()))

    run_passes(len(samples) * items, sizer, do_pass, inputs.device)
    shape = tuple(inputs.shape[1:]) if map_shape is None else tuple(map_shape)
    maps = state["maps"] if state["maps"] is not None else inputs.new_zeros((n, t, *shape))
    delta = state["delta"] if attributor.has_delta else None
    if attributor.has_delta and delta is None:  # no pass ran: no pair to compute
        delta = inputs.new_zeros((n, t))
    total = Attribution(maps, delta=delta, second=state["second"], sums=state["sums"])
    final = attributor.finish(inputs, total)
    whole_call = Batch(inputs, targets, mask, samples, samples)
    checked = replace(final, outputs=None) if isinstance(final, Attribution) else final  # a wrong type is named
    check_attribution(attributor, checked, whole_call, who, call="finish()", map_shape=map_shape)
    delta = final.delta if attributor.has_delta else None
    return MethodResult(_blank(final.maps, mask, inputs.dtype), _blank(delta, mask, inputs.dtype), state["outputs"])


def _blank(values: Tensor | None, mask: Tensor, dtype: torch.dtype) -> Tensor | None:
    """``values`` in ``dtype``, NaN where no pair was computed (a copy then: the method's tensor stays as it is)."""
    if values is None:
        return None
    values = values.detach().to(dtype)
    if bool(mask.all()):
        return values
    values = values.clone()
    values[~mask] = float("nan")
    return values


def _add(state: dict[str, Tensor | None], name: str, part: Tensor, rows: Tensor, n: int, whole: bool) -> None:
    if whole and bool((rows == torch.arange(n, device=rows.device)).all()):
        state[name] = part.detach()
        return
    if state[name] is None:
        state[name] = part.new_zeros((n, *part.shape[1:]))
    state[name].index_add_(0, rows, part.detach().to(state[name].dtype))
