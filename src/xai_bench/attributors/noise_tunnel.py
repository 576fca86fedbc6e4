"""SmoothGrad and its variants for any method: its maps over noisy copies of each input.

``smooth={"samples": S, "stdev": s, "kind": k}`` on any method wraps it in :class:`NoiseTunnel`,
which multiplies the method's expansion axis by S: item ``d * items + j`` is item ``j`` of the
method on the ``d``-th noisy copy. The planner batches (sample, draw, item) triples like any
other pairs; a draw whose items are split over two passes is carried from one to the next, and
each finished draw is finished by the method itself on its own noisy input (IG's
``(x~ - baseline)``), as captum's ``NoiseTunnel`` does.

The noise of draw ``d`` of a sample comes from a generator seeded by ``seed``, the sample's key
(a hash of its id) and ``d``, drawn on the CPU: a map does not depend on the batching, the
blocks of a run, a resume or the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.checks import positive_int
from ..core.errors import InvalidParameterError, PluginError
from .base import Attribution, Attributor, Batch, Cost, Prepared, check_attribution, zero_maps

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")
_DEFAULTS = {"samples": 16, "stdev": 0.15, "kind": "smoothgrad", "seed": 0}


@dataclass(frozen=True)
class Smoothing:
    """What ``smooth=`` asked for: S noisy copies with Gaussian noise of standard deviation ``stdev``."""

    samples: int
    stdev: float
    kind: str
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "stdev": self.stdev, "kind": self.kind, "seed": self.seed}


def check_smoothing(method: str, value: Any) -> Smoothing | None:
    """Validate ``smooth=``: None, or a dict with ``samples``, ``stdev``, ``kind`` and ``seed`` (all optional)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidParameterError(
            f"{method}: smooth must be a dict such as {{'samples': 16, 'stdev': 0.15, 'kind': 'smoothgrad'}}, "
            f"got {type(value).__name__}."
        )
    unknown = sorted(set(value) - set(_DEFAULTS))
    if unknown:
        raise InvalidParameterError(
            f"{method}: smooth has no key {unknown[0]!r}; its keys are {', '.join(map(repr, _DEFAULTS))}."
        )
    given = {**_DEFAULTS, **value}
    stdev = given["stdev"]
    if isinstance(stdev, bool) or not isinstance(stdev, (int, float)) or not stdev >= 0 or stdev == float("inf"):
        raise InvalidParameterError(
            f"{method}: smooth['stdev'] is the noise's standard deviation in input units (as in captum), "
            f"a finite number >= 0; got {stdev!r}."
        )
    if given["kind"] not in KINDS:
        raise InvalidParameterError(
            f"{method}: smooth['kind'] must be one of {', '.join(map(repr, KINDS))}, got {given['kind']!r}."
        )
    seed = given["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidParameterError(f"{method}: smooth['seed'] must be an int, got {seed!r}.")
    samples = positive_int("smooth['samples']", given["samples"], owner=method)
    return Smoothing(samples, float(stdev), given["kind"], seed)


def noise(smoothing: Smoothing, key: int, draw: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Draw ``draw`` of the noise for the sample with ``key``: (C, H, W) on the CPU, in ``dtype``."""
    digest = hashlib.blake2b(f"{smoothing.seed}:{key}:{draw}".encode(), digest_size=8, person=b"xai-bench-noise")
    generator = torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)
    # Drawn in float32 (float64 for float64 inputs) so half-precision inputs get the same noise, rounded.
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return (torch.randn(shape, generator=generator, dtype=draw_dtype) * smoothing.stdev).to(dtype)


class NoiseTunnel(Attributor):
    """``method`` on ``samples`` noisy copies of each input: their mean (``smoothgrad``, Smilkov et al.,
    2017), the mean of their squares (``smoothgrad_sq``) or their variance (``vargrad``, Adebayo et al.,
    2018). The completeness delta, where the method has one, is the mean of the copies' deltas
    (``smoothgrad`` only: squares and variances do not sum to a difference of outputs)."""

    def __init__(self, method: Attributor, smoothing: Smoothing) -> None:
        self._method = method
        self._smoothing = smoothing
        # Instance flags shadow the class's: they follow the wrapped method.
        self.id = method.id  # type: ignore[misc]
        self.needs_baseline = method.needs_baseline  # type: ignore[misc]
        self.needs_surgery = method.needs_surgery  # type: ignore[misc]
        # The mean of maps that multiply by (x~ - baseline) still does, as captum's NoiseTunnel says.
        self.multiplies_by_inputs = method.multiplies_by_inputs and smoothing.kind == "smoothgrad"  # type: ignore[misc]
        self.has_delta = method.has_delta and smoothing.kind == "smoothgrad"  # type: ignore[misc]
        self.reports_outputs = False  # type: ignore[misc]  # noisy copies' logits are not the inputs'
        # A draw split over two passes: (its sample's position, the draw, the contributions so far).
        self._open: tuple[int, int, Attribution] | None = None
        # The method's maps' shape where it is not the inputs' (a layer's output), known once prepared.
        self._map_shape: tuple[int, ...] | None = None

    def params(self) -> dict[str, Any]:
        return {**self._method.params(), "smooth": self._smoothing.as_dict()}

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        inner = self._method.cost(input_shape)
        return Cost(items=self._smoothing.samples * inner.items, images=inner.images, backward=inner.backward)

    def check_inputs(self, inputs: Tensor) -> None:
        self._method.check_inputs(inputs)

    def works_in_blocks(self) -> str | None:
        return self._method.works_in_blocks()

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        prepared = self._method.prepare(model, example)
        self._map_shape = prepared.map_shape
        return prepared

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        if batch.key is None or batch.position is None:
            raise PluginError(f"{self.id}: smooth= needs each sample's key and position in the Batch.")
        x, t = batch.inputs, batch.targets.shape[1]
        samples = self._smoothing.samples
        items = self._method.cost(tuple(x.shape[1:])).items
        # The pass's (sample, draw) copies, in order: one row of the method's own batch each.
        draw_of_pair = batch.item // items
        copies, copy_of_pair = torch.unique_consecutive(batch.sample * samples + draw_of_pair, return_inverse=True)
        owner, draw = copies // samples, copies % samples
        noisy = x[owner.to(x.device)] + torch.stack(
            [
                noise(self._smoothing, int(batch.key[int(s)]), int(d), tuple(x.shape[1:]), x.dtype)
                for s, d in zip(owner.tolist(), draw.tolist(), strict=True)
            ]
        ).to(x.device)
        rows = owner.to(x.device)
        inner = Batch(
            noisy, batch.targets[rows], batch.mask[rows], copy_of_pair, batch.item % items,
            batch.position[rows], batch.key[owner],
        )  # fmt: skip
        part = check_attribution(self._method, self._method.attribute(model, inner), inner, map_shape=self._map_shape)
        part = Attribution(part.maps, delta=part.delta, second=part.second, sums=part.sums)
        first_item = torch.zeros(len(copies), dtype=torch.long).scatter_reduce(
            0, copy_of_pair, batch.item % items, reduce="amin", include_self=False
        )
        last_item = torch.zeros(len(copies), dtype=torch.long).scatter_reduce(
            0, copy_of_pair, batch.item % items, reduce="amax", include_self=False
        )
        part = self._continue(part, first_item, batch.position[rows], draw)
        done = (last_item == items - 1).nonzero().flatten()
        finished = self._method.finish(noisy[done.to(x.device)], _rows(part, done))
        result = self._contributions(x, t, owner[done].to(x.device), finished)
        # Only the pass's last copy can be unfinished; it is carried into the next pass.
        cut = len(copies) - 1
        unfinished = len(done) < len(copies)
        carried = (int(batch.position[rows][cut]), int(draw[cut]), _rows(part, torch.tensor([cut])))
        self._open = carried if unfinished else None
        return result

    def _continue(self, part: Attribution, first_item: Tensor, position: Tensor, draw: Tensor) -> Attribution:
        """Add the contributions carried from the previous pass to the pass's first copy, if it continues one."""
        if int(first_item[0]) == 0:
            return part
        carried = self._open
        if carried is None or carried[:2] != (int(position[0]), int(draw[0])):
            raise PluginError(f"{self.id}: a noisy copy continued in a pass that did not follow its start.")

        def head(mine: Tensor | None, theirs: Tensor | None) -> Tensor | None:
            if mine is None or theirs is None:
                return mine
            mine = mine.clone()
            mine[:1] += theirs
            return mine

        return Attribution(
            head(part.maps, carried[2].maps), delta=head(part.delta, carried[2].delta),
            second=head(part.second, carried[2].second), sums=head(part.sums, carried[2].sums),
        )  # fmt: skip

    def _contributions(self, x: Tensor, t: int, owner: Tensor, finished: Attribution) -> Attribution:
        """This pass's share of the S-copy mean (and of the mean square) for the samples of ``x``."""
        share = 1.0 / self._smoothing.samples
        kind = self._smoothing.kind
        maps = zero_maps(x, t, self._map_shape).to(_accumulator_dtype(x) if kind == "vargrad" else x.dtype)
        copy_maps = finished.maps.to(maps.dtype)
        maps.index_add_(0, owner, (copy_maps if kind == "smoothgrad" else copy_maps * copy_maps) * share)
        delta = second = None
        if self.has_delta and finished.delta is not None:
            delta = x.new_zeros((x.shape[0], t)).index_add_(0, owner, finished.delta.to(x.dtype) * share)
        if kind == "vargrad":
            second = torch.zeros_like(maps).index_add_(0, owner, copy_maps * share)
        return Attribution(maps, delta=delta, second=second)

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        if self._smoothing.kind == "vargrad":
            mean = total.second if total.second is not None else torch.zeros_like(total.maps)
            # E[a^2] - E[a]^2 cancels most of its digits where the copies differ little (a variance of
            # 1e-6 of the mean square keeps 1 float32 digit): both moments are summed in float64, and
            # a variance rounded below zero where the copies agree is zero.
            variance = (total.maps.to(mean.dtype) - mean * mean).clamp_min(0)
            return Attribution(variance.to(inputs.dtype), delta=None)
        return Attribution(total.maps, delta=total.delta if self.has_delta else None)


def _accumulator_dtype(x: Tensor) -> torch.dtype:
    """float64 for VarGrad's moments, where the device has it (Apple's MPS has none)."""
    return torch.float32 if x.device.type == "mps" and x.dtype != torch.float64 else torch.float64


def _rows(part: Attribution, rows: Tensor) -> Attribution:
    def pick(values: Tensor | None) -> Tensor | None:
        return None if values is None else values[rows.to(values.device)]

    return Attribution(pick(part.maps), delta=pick(part.delta), second=pick(part.second), sums=pick(part.sums))
