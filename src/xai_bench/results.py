"""Label attribution tensors as an ``xarray.Dataset`` and store it in zarr."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

MAP_DIMS = ("sample", "target", "channel", "y", "x")
PAIR_DIMS = ("sample", "target")


def build_dataset(
    *,
    maps: dict[str, np.ndarray],
    deltas: dict[str, np.ndarray],
    method_attrs: dict[str, dict[str, Any]],
    scores: np.ndarray,
    sample_ids: Sequence[Any],
    target_coords: Sequence[Any],
    target_indices: Sequence[int],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Assemble maps (N, T, C, H, W), deltas (N, T) and scores (N, T) into one labelled Dataset."""
    first = next(iter(maps.values()))
    _, _, c, h, w = first.shape
    coords = {
        "sample": _coordinate(sample_ids),
        "target": _coordinate(target_coords),
        "target_index": ("target", np.asarray(target_indices, dtype=np.int64)),
        "channel": np.arange(c),
        "y": np.arange(h),
        "x": np.arange(w),
    }
    data_vars: dict[str, Any] = {}
    for method_id, array in maps.items():
        data_vars[method_id] = xr.Variable(MAP_DIMS, array, attrs=method_attrs[method_id])
        if method_id in deltas:
            data_vars[f"{method_id}_delta"] = xr.Variable(
                PAIR_DIMS,
                deltas[method_id],
                attrs={"description": f"sum of {method_id} maps minus (f(x) - f(baseline)); 0 is exact"},
            )
    data_vars["score"] = xr.Variable(PAIR_DIMS, scores, attrs={"description": "model logit for the target"})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _coordinate(values: Sequence[Any]) -> np.ndarray:
    array = np.asarray(values)
    # Variable-length strings have a zarr v3 specification; fixed-width unicode does not.
    return array.astype(object) if array.dtype.kind in "US" else array


def save_maps(ds: xr.Dataset, store: str | os.PathLike[str], *, mode: str = "w-") -> None:
    """Write ``ds`` to a zarr store (format 3), one chunk per sample for every map."""
    encoding = {}
    for name, var in ds.data_vars.items():
        if var.dims and var.dims[0] == "sample":
            encoding[name] = {"chunks": (1, *var.shape[1:])}
    ds.to_zarr(store, mode=mode, encoding=encoding, consolidated=False, zarr_format=3)


def open_maps(store: str | os.PathLike[str]) -> xr.Dataset:
    """Open a store written by xai_bench lazily, with coordinates and provenance."""
    if not os.path.exists(store):
        raise FileNotFoundError(f"No zarr store at {os.fspath(store)!r}.")
    return xr.open_zarr(store, consolidated=False)
