"""A zarr store filled sample by sample: template, region writes, ``done`` flags, resume."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ..core.errors import StoreMismatchError
from .datasets import string_coordinate
from .zarr_io import consolidate, quiet_consolidation, sample_chunks

DONE = "done"
RUN_KEY = "run_fingerprint"


def create_template(
    store: str | os.PathLike[str], first: xr.Dataset, sample_ids: Sequence[Any], fingerprint: str
) -> None:
    """Write ``first`` (a block of samples at the start of the data) and size every array for all samples.

    Unwritten samples read as NaN, and their ``done`` flag as False, until a block fills them.
    """
    n_block = first.sizes["sample"]
    ds = first.assign({DONE: ("sample", np.zeros(n_block, dtype=bool))})
    ds[DONE].attrs["description"] = "True once the sample's maps are on disk"
    ds.attrs[RUN_KEY] = fingerprint
    with quiet_consolidation():
        ds.to_zarr(
            store, mode="w-", consolidated=False, zarr_format=3, encoding=sample_chunks(ds, n_samples=len(sample_ids))
        )
    group = zarr.open_group(store, mode="r+")
    for name, var in ds.variables.items():
        if var.dims and var.dims[0] == "sample":
            group[name].resize((len(sample_ids), *var.shape[1:]))
    group["sample"][:] = string_coordinate(sample_ids)
    consolidate(store)


def check_run(store: str | os.PathLike[str], fingerprint: str, n: int) -> np.ndarray:
    """Return the ``done`` flags of an existing store after checking it belongs to this run."""
    try:
        group = zarr.open_group(store, mode="r")
    except Exception as exc:  # zarr raises several kinds for folders that are not groups
        raise StoreMismatchError(
            f"{os.fspath(store)!r} exists but is not a zarr store written by xai_bench.run ({exc}); "
            "choose another path."
        ) from exc
    found = group.attrs.get(RUN_KEY)
    if found != fingerprint or DONE not in group or group[DONE].shape != (n,):
        raise StoreMismatchError(
            f"{os.fspath(store)!r} holds a different run (methods, parameters, model weights, targets or "
            "data differ), so resuming would mix results. Write to a new store, or delete this one to start over."
        )
    return np.asarray(group[DONE][:], dtype=bool)


def write_block(store: str | os.PathLike[str], block: xr.Dataset, indices: Sequence[int]) -> None:
    """Write a block's samples at ``indices``, then mark them done (maps first: a crash leaves them undone)."""
    group = zarr.open_group(store, mode="r+")
    index = np.asarray(indices)
    # Per-sample coordinates too: in the slot layout each sample names its own targets.
    for name, var in block.variables.items():
        if name != "sample" and var.dims and var.dims[0] == "sample":
            group[name].oindex[(index,)] = var.values
    group[DONE].oindex[(index,)] = np.ones(len(index), dtype=bool)
