"""One store class for results written block by block: ``run``, its dask workers, and resumes.

The pattern is xarray-beam's: a template sized for every sample is written once, then blocks of
samples fill their own regions (one chunk per sample, so parallel writers never share one),
each region checked against the template before it is written, and each sample's ``done`` flag
written last. The template is built in a hidden sibling folder and renamed into place, with the
first block and its flags already in it, so a crash at any point leaves either no store or a
store whose ``done`` flags tell exactly what is on disk. Provenance is written once, with the
template. Every writer records the bound checksums of its samples' chunks (one small file per
sample) before their flags; the coordinates, written once, are sealed with the template.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype

from ..core.errors import StoreMismatchError
from .datasets import string_coordinate
from .zarr_io import (
    DONE,
    RECORDS,
    Damage,
    consolidate,
    find_damage,
    forget_samples,
    kill_point,
    move_into_place,
    partial_name,
    quiet_consolidation,
    read_flags,
    read_json,
    record_samples,
    remove_stale_partials,
    sample_chunks,
    seal,
    seals_of,
    uninterrupted,
    write_json,
)

RUN_KEY = "run_fingerprint"
#: per-sample checksum of the input image the maps were computed from (0: unknown)
INPUTS = "input_checksum"
#: The names of the arrays a :meth:`SampleStore.drop` is deleting, while it runs.
DROPPING = f"{DONE}/.dropping.json"  # inside an array's folder, where zarr's listing of the hierarchy never looks


class SampleStore:
    """A zarr store of per-sample results with ``done`` flags, input checksums and a run fingerprint."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def _group(self, mode: str = "r") -> zarr.Group:
        return zarr.open_group(os.fspath(self.path), mode=mode)

    def create(self, first: xr.Dataset, positions: Sequence[int], sample_ids: Sequence[Any], fingerprint: str) -> None:
        """Write the template for ``sample_ids`` with the block ``first`` (at ``positions``) already in it."""
        n = len(sample_ids)
        template = first.isel(sample=[0]).assign({DONE: ("sample", np.zeros(1, dtype=bool))})
        template[DONE].attrs["description"] = "True once the sample's results are on disk"
        template.attrs[RUN_KEY] = fingerprint
        remove_stale_partials(self.path)
        temporary = partial_name(self.path)
        with uninterrupted():
            try:
                with quiet_consolidation():
                    template.to_zarr(
                        temporary,
                        mode="w-",
                        consolidated=False,
                        zarr_format=3,
                        encoding=sample_chunks(template, n_samples=n),
                        write_empty_chunks=True,
                    )
                kill_point("template")
                group = zarr.open_group(os.fspath(temporary), mode="r+")
                for name, var in template.variables.items():
                    if var.dims and var.dims[0] == "sample":
                        group[name].resize((n, *var.shape[1:]))
                group["sample"][:] = string_coordinate(sample_ids)
                group[DONE][:] = False
                consolidate(temporary)
                seal(temporary, [str(name) for name, var in template.variables.items() if not _per_sample(name, var)])
                SampleStore(temporary).write(first, positions)
                kill_point("rename")
                move_into_place(temporary, self.path)
            finally:
                if temporary.exists():
                    shutil.rmtree(temporary)

    def check(self, fingerprint: str, n: int) -> None:
        """Refuse a path that is no store of this run (other methods, parameters, weights, targets or samples)."""
        try:
            group = self._group()
        except Exception as exc:  # zarr raises several kinds for folders that are not groups
            raise StoreMismatchError(
                f"{os.fspath(self.path)!r} exists but is not a zarr store written by xai_bench.run ({exc}); "
                "choose another path."
            ) from exc
        remove_stale_partials(self.path)
        if not (self.path / RECORDS).is_dir():
            raise StoreMismatchError(
                f"{os.fspath(self.path)!r} was written by an older xai_bench, whose checksums do not tie a chunk "
                "to its place, so it cannot be resumed safely; delete it and run again, or write to a new store."
            )
        found = group.attrs.get(RUN_KEY)
        if found != fingerprint or DONE not in group or group[DONE].shape != (n,):
            raise StoreMismatchError(
                f"{os.fspath(self.path)!r} holds a different run (methods, parameters, model weights, targets, "
                "sample ids, store_inputs or the input normalisation differ), so resuming would mix results. "
                "Write to a new store, or delete this one to start over."
            )

    def done(self, positions: Sequence[int] | None = None) -> np.ndarray:
        """The ``done`` flags of every sample, or of ``positions`` (an unreadable flag reads as not done)."""
        group = self._group()
        if positions is None:
            return read_flags(group)[0]
        try:
            return np.asarray(group[DONE].oindex[(np.asarray(positions),)], dtype=bool)
        except Exception:  # a damaged flag chunk among them: read them one by one
            return read_flags(group)[0][np.asarray(positions)]

    def damaged(self, *, read: bool = False) -> Damage:
        """Samples with an unreadable flag, or done with a missing chunk (or, with ``read``, one that
        fails its bound checksum), and damaged arrays written whole (coordinates)."""
        group = self._group()
        flags, broken = read_flags(group)
        found = find_damage(group, flags, read=read)
        for position in broken:
            found.add(position, DONE)
        return found

    def added(self) -> list[str]:
        """Arrays added to the store after the run wrote it (``evaluate(into=...)``): derived from the maps.

        Arrays a :meth:`drop` killed half-way was deleting count too (its list of names is on disk until
        it ends), and metrics whose folder is gone; another array of the run's whose folder is gone
        (a coordinate) is damage, found by :meth:`damaged` and rebuilt.
        """
        listed = read_json(self.path / DROPPING)
        dropping = set(map(str, listed)) if isinstance(listed, list) else set()
        group = self._group()

        def lost_metric(name: str) -> bool:  # its folder gone, its metadata (consolidated) says it is a metric
            return not (self.path / name / "zarr.json").is_file() and "metric" in group[name].attrs

        return sorted(
            name
            for name in group.array_keys()
            if (seals_of(self.path, name) or {}).get("added") or name in dropping or lost_metric(name)
        )

    def drop(self, names: Sequence[str]) -> None:
        """Delete the arrays ``names`` (and their metadata) from the store."""
        if not names:
            return
        marker = self.path / DROPPING
        write_json(marker, sorted(names))  # a kill before the end leaves the names for the next run
        for name in names:
            shutil.rmtree(self.path / name, ignore_errors=True)
        consolidate(self.path)
        marker.unlink()

    def rebuild(self, values: dict[str, np.ndarray]) -> None:
        """Write arrays that are not per sample (coordinates) again, whole, from ``values``, and seal them."""
        group = self._group("r+")
        for name, value in values.items():
            meta = self.path / name / "zarr.json"
            if not meta.is_file():  # the whole folder was lost: its metadata is still consolidated at the root
                meta.parent.mkdir(parents=True, exist_ok=True)
                meta.write_bytes(
                    group[name].metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
                )
            grid = self.path / name / "c"
            if grid.is_dir():
                shutil.rmtree(grid)
            elif grid.exists():  # a 0-d array's one chunk
                grid.unlink()
            group[name].with_config({"write_empty_chunks": True})[...] = value
        seal(self.path, list(values))

    def input_checksums(self) -> np.ndarray:
        return np.asarray(self._group()[INPUTS][:], dtype=np.int64)

    def mark_undone(self, positions: Sequence[int], *, discard: bool = False) -> None:
        """Clear the ``done`` flags at ``positions``; with ``discard``, delete their chunks first.

        Damaged chunks must go before anything is written there: zarr may read a chunk it updates.
        """
        if not len(positions):
            return
        group = self._group("r+")
        if discard:
            forget_samples(self.path, positions)
            for name, array in group.arrays():
                if name != "sample" and array.ndim and array.metadata.dimension_names[:1] == ("sample",):
                    for position in positions:
                        chunk = self.path / name / "c" / str(int(position))
                        if chunk.is_dir():
                            shutil.rmtree(chunk)
                        elif chunk.exists():
                            chunk.unlink()
        group[DONE].oindex[(np.asarray(positions),)] = False

    def write(self, block: xr.Dataset, positions: Sequence[int]) -> None:
        """Write a block's samples at ``positions`` after checking it fits, then mark them done."""
        group = self._group("r+")
        index = np.asarray(positions)
        self._check_region(group, block, index)
        written = {str(name): var.ndim for name, var in block.variables.items() if _per_sample(name, var)}
        with uninterrupted():
            for name, var in block.variables.items():
                if _per_sample(name, var):
                    array = group[name].with_config({"write_empty_chunks": True})
                    array.oindex[(index,)] = var.values
                    kill_point("region")
            record_samples(self.path, written, index.tolist())
            # The flags go last: a crash before this line leaves the samples to be recomputed.
            group[DONE].oindex[(index,)] = np.ones(len(index), dtype=bool)

    def _check_region(self, group: zarr.Group, block: xr.Dataset, index: np.ndarray) -> None:
        where = os.fspath(self.path)
        ids = np.asarray(group["sample"].oindex[(index,)]).tolist()
        if [str(i) for i in ids] != [str(i) for i in block["sample"].values.tolist()]:
            raise StoreMismatchError(f"{where}: a block's sample ids do not match the store's at its positions.")
        for name, var in block.variables.items():
            if name == "sample" or not var.dims or var.dims[0] != "sample":
                continue
            if name not in group or tuple(group[name].shape[1:]) != var.shape[1:]:
                raise StoreMismatchError(
                    f"{where}: variable {name!r} of shape {var.shape[1:]} per sample does not fit the store's "
                    f"template ({tuple(group[name].shape[1:]) if name in group else 'missing'})."
                )
        for name in ("target", "target_index", "channel", "y", "x"):
            if name in block.coords and block[name].dims[:1] != ("sample",):
                stored = np.asarray(group[name][:]).tolist()
                if [str(v) for v in stored] != [str(v) for v in block[name].values.tolist()]:
                    raise StoreMismatchError(f"{where}: coordinate {name!r} of a block differs from the store's.")


def _per_sample(name: Any, var: xr.Variable) -> bool:
    return name != "sample" and bool(var.dims) and var.dims[0] == "sample"
