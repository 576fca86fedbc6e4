"""Label attribution arrays as an ``xarray.Dataset`` in one of two target layouts.

Dense layout, when every sample has the same targets: maps (sample, target, channel, y, x), with
the ``target`` coordinate naming the classes. Slot layout, when targets differ per sample: maps
(sample, slot, channel, y, x), with ``target`` and ``target_index`` coordinates of dims
(sample, slot) naming each slot's class; unused slots hold NaN maps, an empty ``target`` name
(or -1) and ``target_index`` -1. Its size follows the pairs computed, not the number of classes.

Maps of a layer (``layer=`` on a method) have the layer's output shape per sample, on dims of their
own named after the method: ``(sample, target|slot, <method>_channel, <method>_y, <method>_x)`` for a
(C', H', W') output, ``<method>_unit`` for an (F,) one, ``<method>_unit0``, ``<method>_unit1``, ...
for other ranks; their ``layer`` attribute names the module. Maps of the input keep the dims above.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

Layout = Literal["dense", "slot"]
#: ``target_index`` of an unused slot
UNUSED = -1
#: the variable holding the explained inputs, where a Dataset keeps them
INPUT = "input"


@dataclass(frozen=True)
class TargetTable:
    """Which class each (sample, column) pair explains, in either layout.

    ``index`` (N, S) holds class indices, ``UNUSED`` where a slot is empty; in the dense layout
    every row is the same. ``labels`` names the model's outputs, if known.
    """

    layout: Layout
    index: np.ndarray
    labels: Sequence[str] | None = None

    @property
    def column_dim(self) -> str:
        return "target" if self.layout == "dense" else "slot"

    @property
    def used(self) -> np.ndarray:
        """(N, S) bool: True where the pair has a class (its map may still be skipped, e.g. unpredicted)."""
        return self.index != UNUSED

    def names(self) -> np.ndarray:
        """Class names (or indices without labels) of ``index``, with '' (or -1) for unused slots."""
        if self.labels is None:
            return self.index.astype(np.int64)
        names = np.asarray([[self.labels[i] if i != UNUSED else "" for i in row] for row in self.index], dtype=object)
        return names.reshape(self.index.shape)


def map_dims(layout: Layout) -> tuple[str, ...]:
    """The dims of maps of the input."""
    return ("sample", "target" if layout == "dense" else "slot", "channel", "y", "x")


def layer_map_dims(layout: Layout, method: str, rank: int) -> tuple[str, ...]:
    """The dims of ``method``'s maps of a layer with ``rank`` dims per sample (see the module's docstring)."""
    names = {1: ("unit",), 3: ("channel", "y", "x")}.get(rank) or tuple(f"unit{i}" for i in range(rank))
    return (*map_dims(layout)[:2], *(f"{method}_{name}" for name in names))


def build_dataset(
    *,
    maps: dict[str, np.ndarray],
    deltas: dict[str, np.ndarray],
    method_attrs: dict[str, dict[str, Any]],
    scores: np.ndarray,
    sample_ids: Sequence[Any],
    targets: TargetTable,
    attrs: dict[str, Any],
    inputs: np.ndarray | None = None,
    score_description: str = "model logit for the target",
) -> xr.Dataset:
    """Assemble maps (N, S, C, H, W), deltas (N, S), scores (N, S) and, if given, the inputs
    (N, C, H, W) as ``input`` into one labelled Dataset.

    A method whose ``method_attrs`` name a ``layer`` has maps (N, S, *shape) of that layer's output,
    on dims of its own (:func:`layer_map_dims`)."""
    dims = map_dims(targets.layout)
    pair_dims = dims[:2]
    s = targets.index.shape[1]
    coords: dict[str, Any] = {"sample": string_coordinate(sample_ids)}
    of_input = [array for method_id, array in maps.items() if "layer" not in method_attrs[method_id]]
    image = of_input[0].shape[2:] if of_input else inputs.shape[1:] if inputs is not None else None
    if image is not None:
        c, h, w = image
        coords.update({"channel": np.arange(c), "y": np.arange(h), "x": np.arange(w)})
    names = targets.names()
    if targets.layout == "dense":
        coords["target"] = string_coordinate(list(names[0]))
        coords["target_index"] = ("target", targets.index[0].astype(np.int64))
    else:
        coords["slot"] = np.arange(s)
        coords["target"] = (pair_dims, names)
        coords["target_index"] = (pair_dims, targets.index.astype(np.int64))
    data_vars: dict[str, Any] = {}
    for method_id, array in maps.items():
        provenance = method_attrs[method_id]
        own = dims if "layer" not in provenance else layer_map_dims(targets.layout, method_id, array.ndim - 2)
        data_vars[method_id] = xr.Variable(own, array, attrs=provenance)
        if method_id in deltas:
            data_vars[f"{method_id}_delta"] = xr.Variable(
                pair_dims,
                deltas[method_id],
                attrs={"description": f"sum of {method_id} maps minus (f(x) - f(baseline)); 0 is exact"},
            )
    data_vars["score"] = xr.Variable(pair_dims, scores, attrs={"description": score_description})
    if inputs is not None:
        data_vars[INPUT] = xr.Variable(
            ("sample", "channel", "y", "x"),
            inputs,
            attrs={"description": "the input the maps explain, as the model saw it"},
        )
    return xr.Dataset(data_vars, coords=coords, attrs={**attrs, "target_layout": targets.layout})


def method_ids(ds: xr.Dataset) -> list[str]:
    """The map variables of ``ds``, in the order the methods were asked for (kept through a store)."""
    maps = [name for name in ds.data_vars if name != INPUT and _is_map(ds[name])]
    try:
        asked = [m for m in json.loads(ds.attrs.get("methods", "[]")) if m in maps]
    except (TypeError, ValueError):
        asked = []
    return asked + [m for m in maps if m not in asked]


def string_coordinate(values: Sequence[Any]) -> np.ndarray:
    """A coordinate array; strings as objects, since zarr v3 specifies variable-length strings only."""
    array = np.asarray(values)
    return array.astype(object) if array.dtype.kind in "US" else array


def layout_of(ds: xr.Dataset) -> Layout:
    """``"slot"`` when ``ds`` has a slot dimension, else ``"dense"``."""
    return "slot" if "slot" in ds.dims else "dense"


def targets_of(ds: xr.Dataset, sample: Any) -> list[Any]:
    """The targets (label names, or class indices without labels) that ``sample`` has slots or columns for."""
    row = ds.sel(sample=sample)
    names = np.atleast_1d(row["target"].values)
    used = np.atleast_1d(row["target_index"].values) != UNUSED
    return [name.item() if hasattr(name, "item") else name for name in names[used]]


def listing(values: Sequence[Any], limit: int = 10) -> str:
    """``values`` for a message: the first ``limit``, and how many there are in all when there are more."""
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "") if values else "(none)"


def select_map(ds: xr.Dataset, method: str, *, sample: Any, target: Any) -> xr.DataArray:
    """Return the (channel, y, x) map of class ``target`` (a label or class index) for ``sample``
    (for maps of a layer, the layer's output shape on the method's own dims: see :func:`map_layer`).

    Works on both layouts. Raises ``KeyError`` when the store has no map for that pair.
    """
    if method not in ds:
        raise KeyError(f"no method {method!r} in the dataset; it has {method_ids(ds)}.")
    ids = ds["sample"].values.tolist()
    if sample not in ids:  # xarray's own miss suggests method='nearest', which would pick another sample
        from ..core.errors import did_you_mean

        hint = did_you_mean(str(sample), [str(i) for i in ids])
        raise KeyError(f"no sample {sample!r} in the dataset; samples: {listing(ids)}.{hint}")
    row = ds.sel(sample=sample)
    by_index = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
    names = row["target_index"].values if by_index else row["target"].values
    hits = np.flatnonzero(np.asarray(names) == target)
    if not len(hits):
        present = [str(t) for t in targets_of(ds, sample)]
        raise KeyError(f"sample {sample!r} has no map of target {target!r}; it has {present}.")
    column = "target" if layout_of(ds) == "dense" else "slot"
    picked = row[method].isel({column: int(hits[0])})
    # A pair not computed is NaN throughout; a computed map may hold NaN where its gradient was not finite.
    if bool(np.isnan(picked.values).all()):
        raise KeyError(f"sample {sample!r} has no map of target {target!r}: it was not computed (not predicted).")
    return picked


def map_layer(ds: xr.Dataset, method: str) -> str | None:
    """The module ``method``'s maps attribute to, or None for maps of the input."""
    return str(ds[method].attrs["layer"]) if is_layer_map(ds[method]) else None


def is_layer_map(var: xr.DataArray) -> bool:
    """Whether ``var`` holds maps of a layer: (sample, target|slot, <its name>_...) with a ``layer`` attribute."""
    dims = var.dims
    return (
        "layer" in var.attrs
        and len(dims) >= 3
        and dims[0] == "sample"
        and dims[1] in ("target", "slot")
        and all(str(d).startswith(f"{var.name}_") for d in dims[2:])
    )


def _is_map(var: xr.DataArray) -> bool:
    if is_layer_map(var):
        return True
    return len(var.dims) == 5 and var.dims[0] == "sample" and var.dims[-3:] == ("channel", "y", "x")
