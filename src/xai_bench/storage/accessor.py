"""``ds.xai``: a result's methods, targets, pairs, maps, inputs and metric scores, in either target layout.

Registered on every xarray Dataset when xai_bench is imported. Callers ask for what they mean (the
map of a sample's target, the pairs that have maps, a metric's scores of a method) and never test
for the dense ``(sample, target, ...)`` or the slot ``(sample, slot, ...)`` layout themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .datasets import INPUT, UNUSED, Layout, layout_of, map_layer, method_ids, select_map, targets_of

_EVERY = object()


@xr.register_dataset_accessor("xai")
class XaiAccessor:
    """What a Dataset of :func:`~xai_bench.explain`, :func:`~xai_bench.open_maps` or
    :func:`~xai_bench.evaluate` holds, whichever target layout it has."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def methods(self) -> list[str]:
        """The methods with maps, in the order they were asked for."""
        return method_ids(self._ds)

    def layer(self, method: str) -> str | None:
        """The module ``method``'s maps attribute to (its ``layer=``), or None for maps of the input."""
        if method not in method_ids(self._ds):
            raise KeyError(f"no method {method!r} in the dataset; it has {method_ids(self._ds)}.")
        return map_layer(self._ds, method)

    @property
    def layout(self) -> Layout:
        """``"dense"`` (the same targets for every sample) or ``"slot"`` (targets per sample)."""
        return layout_of(self._ds)

    @property
    def output(self) -> str:
        """What the maps explain: ``"logit"``, ``"sigmoid"`` or ``"softmax"`` (stores without it: logits)."""
        return str(self._ds.attrs.get("output", "logit"))

    @property
    def samples(self) -> list[Any]:
        return [_plain(s) for s in np.atleast_1d(self._ds["sample"].values)]

    @property
    def inputs(self) -> xr.DataArray | None:
        """The inputs (sample, channel, y, x) the maps explain, where they were kept (``store_inputs``)."""
        return self._ds.get(INPUT)

    def targets(self, sample: Any = _EVERY) -> list[Any]:
        """The targets ``sample`` has maps of; without a sample, every target of any sample, first seen first."""
        if sample is not _EVERY:
            return targets_of(self._ds, sample)
        seen: dict[Any, None] = {}
        for _, target in self.pairs():
            seen.setdefault(target, None)
        return list(seen)

    def pairs(self) -> list[tuple[Any, Any]]:
        """Every (sample, target) with a map, sample by sample, in each sample's target order."""
        names = np.asarray(self._ds["target"].values)
        used = np.asarray(self._ds["target_index"].values) != UNUSED
        if self.layout == "dense":  # one row of targets shared by every sample
            names, used = (
                np.broadcast_to(names, (len(self.samples), len(names))),
                np.broadcast_to(used, (len(self.samples), len(used))),
            )
        return [
            (sample, _plain(name))
            for sample, row, keep in zip(self.samples, names, used, strict=True)
            for name, k in zip(row, keep, strict=True)
            if k
        ]

    def select(self, method: str, sample: Any, target: Any) -> xr.DataArray:
        """The (channel, y, x) map of ``target`` (a label or class index) for ``sample`` (a layer's maps: the layer's
        output shape, on the method's own dims); ``KeyError`` without one."""
        return select_map(self._ds, method, sample=sample, target=target)

    def score(self, sample: Any, target: Any) -> float:
        """The explained output's value for ``target`` of ``sample`` (see :attr:`output`); NaN without a map."""
        row = self._ds.sel(sample=sample)
        by_index = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
        names = np.atleast_1d(row["target_index" if by_index else "target"].values)
        hits = np.flatnonzero(names == target)
        return float(np.atleast_1d(row["score"].values)[hits[0]]) if len(hits) else float("nan")

    @property
    def metrics(self) -> list[str]:
        """The metrics scored in this Dataset (by :func:`~xai_bench.evaluate`), in the order first found."""
        found = (var.attrs.get("metric") for var in self._ds.data_vars.values())
        return list(dict.fromkeys(m for m in found if m))

    def metric(self, metric: str, method: str, part: str | None = None) -> xr.DataArray:
        """``metric``'s scores of ``method``'s maps, per (sample, target or slot); ``part`` picks a metric's
        extra output (e.g. ``"ssim"`` of a randomisation check, ``"curve"`` of deletion)."""
        for name, var in self._ds.data_vars.items():
            if var.attrs.get("metric") != metric or var.attrs.get("method") != method:
                continue
            if str(name) == f"{method}_{metric}" + (f"_{part}" if part else ""):
                return var
        parts = sorted(
            str(name).removeprefix(f"{method}_{metric}").lstrip("_") or "(main)"
            for name, var in self._ds.data_vars.items()
            if var.attrs.get("metric") == metric and var.attrs.get("method") == method
        )
        if parts:
            raise KeyError(f"{metric} of {method} has no part {part!r}; it has {', '.join(parts)}.")
        scored = sorted(
            {
                f"{v.attrs['metric']} of {v.attrs.get('method')}"
                for v in self._ds.data_vars.values()
                if "metric" in v.attrs
            }
        )
        raise KeyError(f"no {metric} scores of {method!r}; scored: {', '.join(scored) or 'none'}.")


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
