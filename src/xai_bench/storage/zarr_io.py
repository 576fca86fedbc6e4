"""Write and read result Datasets as zarr (format 3): one chunk per sample, consolidated metadata."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import numpy as np
import xarray as xr
import zarr


def sample_chunks(ds: xr.Dataset, *, n_samples: int | None = None) -> dict[str, dict[str, tuple[int, ...]]]:
    """Encoding that gives every variable with a leading ``sample`` dim one chunk per sample.

    Parallel writers (dask workers, resumed runs) then never share a chunk. The ``sample``
    coordinate itself is one chunk of ``n_samples`` (default: its length).
    """
    encoding = {}
    for name, var in ds.variables.items():
        if not var.dims or var.dims[0] != "sample":
            continue
        if name == "sample":
            encoding[name] = {"chunks": (n_samples or var.shape[0],)}
        else:
            encoding[name] = {"chunks": (1, *var.shape[1:])}
    return encoding


@contextlib.contextmanager
def quiet_consolidation() -> Iterator[None]:
    # zarr warns that consolidated metadata is not (yet) part of the v3 specification; xarray
    # reads it without a warning (and warns when it is missing), so we write it on purpose.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
        yield


def consolidate(store: str | os.PathLike[str]) -> None:
    """Rewrite the store's consolidated metadata after arrays were added or resized."""
    with quiet_consolidation():
        zarr.consolidate_metadata(os.fspath(store))


def save_maps(ds: xr.Dataset, store: str | os.PathLike[str], *, mode: str = "w-") -> None:
    """Write ``ds`` to a zarr store (format 3), one chunk per sample for every map."""
    with quiet_consolidation():
        ds.to_zarr(store, mode=mode, encoding=sample_chunks(ds), consolidated=True, zarr_format=3)


def open_maps(store: str | os.PathLike[str]) -> xr.Dataset:
    """Open a store written by xai_bench lazily, with coordinates and provenance.

    String coordinates (sample ids, target names) come back as ordinary numpy strings.
    """
    if not os.path.exists(store):
        raise FileNotFoundError(f"No zarr store at {os.fspath(store)!r}.")
    ds = xr.open_zarr(store)
    return ds.assign_coords({name: _plain_strings(ds[name]) for name in ds.coords if _is_string(ds[name])})


def _is_string(var: xr.DataArray) -> bool:
    return var.dtype.kind in "OUT"


def _plain_strings(var: xr.DataArray) -> xr.Variable:
    # zarr returns variable-length strings as numpy's StringDType, which xarray cannot promote
    # (idxmax, where); fixed-width unicode behaves like any other numpy array.
    return xr.Variable(var.dims, np.asarray(np.asarray(var.values).tolist(), dtype=str), attrs=var.attrs)
