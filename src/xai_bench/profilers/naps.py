"""Neuron activation profiles (NAPs) and dead feature maps, as streaming accumulators."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..core.checks import positive_int
from ..core.errors import InvalidParameterError
from .base import GlobalProfiler


def layer_dims(layer: str, ndim: int) -> tuple[str, ...]:
    """Dimension names of one sample's activation at ``layer``: (channel, y, x) or (feature,)."""
    names = {1: ("feature",), 2: ("channel", "x"), 3: ("channel", "y", "x")}
    if ndim not in names:
        raise InvalidParameterError(
            f"layer {layer!r} produced activations with {ndim} dimensions per sample; "
            "profiles support (features,), (channels, width) and (channels, height, width)."
        )
    return tuple(f"{layer}_{d}" for d in names[ndim])


def check_mergeable(profiler: GlobalProfiler, other: GlobalProfiler) -> None:
    if not profiler.same_setup(other):
        raise InvalidParameterError(
            f"cannot merge {type(other).__name__} over layers {other.layers} and groups {other.groups} "
            f"into {type(profiler).__name__} over layers {profiler.layers} and groups {profiler.groups}."
        )


class NeuronActivationProfiles(GlobalProfiler):
    """Group-wise mean activation per feature-map position, minus the mean over groups.

    For group g with members S_g: mean_g = (1/|S_g|) Σ_{x∈S_g} a(x) and
    NAP_g = mean_g - (1/G) Σ_h mean_h, both per channel and position (Krug et al., 2021).
    Each feature map is scored by how much its NAPs differ between groups: the mean over groups
    and positions of NAP², i.e. the between-group variance of its group means. Each batch is summed
    in the activations' dtype and the running totals are float64, so profiles of shards merge into
    the profile of the whole.
    """

    id: ClassVar[str] = "naps"

    def __init__(self, *, layers: Mapping[str, str], groups: Sequence[str], top_k: int = 2) -> None:
        super().__init__(layers=layers, groups=groups)
        self.top_k = positive_int("top_k", top_k, owner=self.id)
        self._sums: dict[str, Tensor] = {}
        self._counts: Tensor | None = None

    def update(self, activations: dict[str, Tensor], groups: Tensor) -> None:
        weights = groups.to(torch.float64)
        for layer in self._layers:
            act = activations[layer].detach()
            # One matrix product per batch in the activations' dtype; running totals in float64.
            flat = act.reshape(act.shape[0], -1)
            add = (weights.to(device=act.device, dtype=act.dtype).T @ flat).to(torch.float64).cpu()
            add = add.reshape(len(self._groups), *act.shape[1:])
            self._sums[layer] = add if layer not in self._sums else self._sums[layer] + add
        counts = weights.sum(0).cpu()
        self._counts = counts if self._counts is None else self._counts + counts

    def merge(self, other: GlobalProfiler) -> NeuronActivationProfiles:
        check_mergeable(self, other)
        merged = NeuronActivationProfiles(layers=self._layers, groups=self._groups, top_k=self.top_k)
        for part in (self, other):
            for layer, total in part._sums.items():
                merged._sums[layer] = total.clone() if layer not in merged._sums else merged._sums[layer] + total
            if part._counts is not None:
                merged._counts = part._counts.clone() if merged._counts is None else merged._counts + part._counts
        return merged

    def result(self) -> xr.Dataset:
        if self._counts is None:
            raise InvalidParameterError("naps: no data was profiled.")
        counts = self._counts.numpy()
        data: dict[str, xr.Variable] = {"group_count": xr.Variable("group", counts.astype(np.int64))}
        for layer in self._layers:
            sums = self._sums[layer].numpy()
            shape = (-1,) + (1,) * (sums.ndim - 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(counts.reshape(shape) > 0, sums / counts.reshape(shape), np.nan)
            nap = means - np.nanmean(means, axis=0, keepdims=True)
            dims = layer_dims(layer, sums.ndim - 1)
            channel = dims[0]
            score = np.nanmean((nap**2).reshape(nap.shape[0], nap.shape[1], -1), axis=(0, 2))
            order = np.argsort(-score, kind="stable")[: self.top_k]
            data[layer] = xr.Variable(("group", *dims), nap, attrs={"description": "group mean minus mean of groups"})
            data[f"{layer}_group_mean"] = xr.Variable(("group", *dims), means)
            data[f"{layer}_score"] = xr.Variable(
                channel, score, attrs={"description": "mean over groups and positions of NAP squared"}
            )
            data[f"{layer}_top"] = xr.Variable(f"{layer}_rank", order.astype(np.int64))
        coords = {"group": np.asarray(self._groups, dtype=object)}
        for layer in self._layers:
            for dim, size in zip(data[layer].dims[1:], data[layer].shape[1:], strict=True):
                coords[dim] = np.arange(size)
        return xr.Dataset(data, coords=coords)


class DeadFeatureMaps(GlobalProfiler):
    """Feature maps that never rise above ``threshold`` anywhere, for any sample of the data set.

    A feature map (channel) of a layer is dead when its largest activation over every position of
    every profiled sample is at most ``threshold``. The share of dead maps is reported per layer
    and over all layers (the input is not counted).
    """

    id: ClassVar[str] = "dead_feature_maps"

    def __init__(self, *, layers: Mapping[str, str], groups: Sequence[str], threshold: float = 0.0) -> None:
        super().__init__(layers=layers, groups=groups)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InvalidParameterError(f"dead_feature_maps: threshold must be a finite number, got {threshold!r}.")
        self.threshold = float(threshold)
        self._max: dict[str, Tensor] = {}
        self._ndim: dict[str, int] = {}

    def update(self, activations: dict[str, Tensor], groups: Tensor) -> None:
        for layer in self._layers:
            if self.is_input(layer):
                continue
            act = activations[layer].detach()
            peak = act.amax(dim=[0, *range(2, act.dim())]).to(torch.float64).cpu()
            self._ndim[layer] = act.dim() - 1
            self._max[layer] = peak if layer not in self._max else torch.maximum(self._max[layer], peak)

    def merge(self, other: GlobalProfiler) -> DeadFeatureMaps:
        check_mergeable(self, other)
        merged = DeadFeatureMaps(layers=self._layers, groups=self._groups, threshold=self.threshold)
        for part in (self, other):
            for layer, peak in part._max.items():
                merged._max[layer] = (
                    peak.clone() if layer not in merged._max else torch.maximum(merged._max[layer], peak)
                )
            merged._ndim.update(part._ndim)
        return merged

    def result(self) -> xr.Dataset:
        layers = [layer for layer in self._layers if not self.is_input(layer)]
        if not layers:
            return xr.Dataset()
        if any(layer not in self._max for layer in layers):
            raise InvalidParameterError("dead_feature_maps: no data was profiled.")
        data: dict[str, xr.Variable] = {}
        shares, dead_total, total = [], 0, 0
        for layer in layers:
            peak = self._max[layer].numpy()
            dead = peak <= self.threshold
            channel = layer_dims(layer, self._ndim[layer])[0]
            data[f"{layer}_max_activation"] = xr.Variable(channel, peak)
            data[f"{layer}_dead"] = xr.Variable(channel, dead)
            shares.append(dead.mean())
            dead_total += int(dead.sum())
            total += dead.size
        data["dead_share"] = xr.Variable(
            "layer", np.asarray(shares), attrs={"description": f"share of feature maps never above {self.threshold}"}
        )
        ds = xr.Dataset(data, coords={"layer": np.asarray(layers, dtype=object)})
        ds.attrs["dead_share_overall"] = dead_total / total
        ds.attrs["dead_threshold"] = self.threshold
        return ds
