"""Write and read result Datasets as zarr (format 3): one chunk per sample, each with a checksum.

Every chunk is compressed with zstd and then carries a crc32c checksum (zarr v3's ``crc32c``
codec), so a damaged chunk raises an error when read instead of returning wrong values; chunks
are written even where they hold only the fill value, so a missing chunk always means a lost
one. Stores carry consolidated metadata, so plain ``xarray.open_zarr`` opens them too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ..core.errors import StoreDamagedError, StoreExistsError, warn
from .datasets import method_ids

#: per-sample ``done`` flags of stores filled block by block
DONE = "done"
#: names a write step at which the process kills itself, as a crash would: ``step`` or ``step:n``
#: (the n-th time the step is reached). A fault-injection hook for tests; unset, it does nothing.
KILL_AT = "XAI_BENCH_KILL_AT"
_reached: dict[str, int] = {}


def kill_point(step: str) -> None:
    """SIGKILL this process here when ``XAI_BENCH_KILL_AT`` names ``step`` (and the count is reached)."""
    wanted = os.environ.get(KILL_AT)
    if not wanted or wanted.partition(":")[0] != step:
        return
    _reached[step] = _reached.get(step, 0) + 1
    if _reached[step] >= int(wanted.partition(":")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def compressors() -> list[Any]:
    """zstd, then a crc32c checksum of the compressed bytes of every chunk."""
    return [ZstdCodec(level=3), Crc32cCodec()]


def sample_chunks(ds: xr.Dataset, *, n_samples: int | None = None) -> dict[str, dict[str, Any]]:
    """Encoding: checksummed chunks, one per sample for every variable with a leading ``sample`` dim.

    Parallel writers (dask workers, resumed runs) then never share a chunk. The ``sample``
    coordinate itself is one chunk of ``n_samples`` (default: its length).
    """
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        encoding[name] = {"compressors": compressors()}
        if not var.dims or var.dims[0] != "sample":
            continue
        if name == "sample":
            encoding[name]["chunks"] = (n_samples or var.shape[0],)
        else:
            encoding[name]["chunks"] = (1, *var.shape[1:])
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


def partial_name(target: Path, kind: str = "partial") -> Path:
    """A hidden sibling of ``target`` to write into before renaming it into place."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.{kind}")


def move_into_place(temporary: Path, target: Path, *, overwrite: bool = False) -> None:
    """Rename a finished ``temporary`` store to ``target`` (replacing it with ``overwrite``)."""
    retired = None
    if overwrite and target.exists():
        retired = partial_name(target, "old")
        target.rename(retired)
    try:
        temporary.rename(target)
    except OSError as exc:  # another writer finished first
        raise StoreExistsError(
            f"{os.fspath(target)!r} was created by another writer while this one wrote; write to a new path."
        ) from exc
    if retired is not None:  # only once the new store is in place
        shutil.rmtree(retired, ignore_errors=True)


def stable_strings(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with fixed-width unicode variables (what :func:`open_maps` returns) as Python strings.

    zarr (format 3) writes fixed-width unicode as a data type that has no v3 specification yet
    (``UnstableSpecificationWarning``: other readers may not know it), and Python strings as its
    variable-length ``string`` type, which the zarr v3 data type extensions specify.
    """
    fixed = [name for name, var in ds.variables.items() if var.dtype.kind == "U"]
    return ds.assign_coords({n: ds[n].astype(object) for n in fixed if n in ds.coords}).assign(
        {n: ds[n].astype(object) for n in fixed if n not in ds.coords}
    )


def check_writable(store: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse, before any work, to write over an existing store unless ``overwrite``."""
    if Path(store).exists() and not overwrite:
        raise StoreExistsError(
            f"{os.fspath(store)!r} exists already. Pass overwrite=True to replace it, write to a new path, "
            "or use xai_bench.run(...) to resume a store it wrote."
        )


def save_maps(ds: xr.Dataset, store: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write ``ds`` to a zarr store (format 3), one checksummed chunk per sample for every map.

    The store is written under a temporary name beside ``store`` and renamed into place once
    complete, so a crash leaves no store that looks finished, and two writers cannot mix.
    """
    target = Path(store)
    check_writable(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_name(target)
    ds = stable_strings(ds)
    try:
        with quiet_consolidation():
            ds.to_zarr(
                temporary,
                mode="w-",
                encoding=sample_chunks(ds),
                consolidated=True,
                zarr_format=3,
                write_empty_chunks=True,
            )
        kill_point("save")
        move_into_place(temporary, target, overwrite=overwrite)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def check_can_add(store: str | os.PathLike[str], names: list[str], *, overwrite: bool) -> None:
    """Refuse, before any work, to add variables a store already holds (unless ``overwrite``)."""
    if not os.path.exists(store):
        raise FileNotFoundError(f"No zarr store at {os.fspath(store)!r}.")
    present = set(zarr.open_group(os.fspath(store), mode="r").array_keys())
    clash = sorted(name for name in names if name in present)
    if clash and not overwrite:
        raise StoreExistsError(
            f"{os.fspath(store)!r} already holds {', '.join(clash[:5])}{' ...' if len(clash) > 5 else ''}; "
            "pass overwrite=True (--overwrite) to replace them."
        )


def check_can_score(
    store: str | os.PathLike[str],
    coords: dict[str, list[Any]],
    names: list[str],
    params: dict[str, str],
    *,
    overwrite: bool,
) -> None:
    """Refuse, before any work, scores that an existing ``store`` cannot take.

    ``names`` are the ``<method>_<metric>`` variables to write (their ``_<suffix>`` variables go
    with them), ``coords`` the maps' sample and target coordinates, ``params`` each metric's
    parameters (JSON). Refused: variables the store holds (unless ``overwrite``), other samples or
    targets, and a metric's curve axis that variables the call leaves in place share with other
    parameters (the axis would change under them).
    """
    check_can_add(store, names, overwrite=overwrite)
    group = zarr.open_group(os.fspath(store), mode="r")
    present = set(group.array_keys())
    where = os.fspath(store)
    for name, values in coords.items():
        if name in present and [str(v) for v in group[name][:].tolist()] != [str(v) for v in values]:
            raise StoreExistsError(
                f"{where!r} holds the scores of other {name} values than these maps'; write to another store "
                "(a new path is created)."
            )
    for array in sorted(present):
        attrs = group[array].attrs
        metric = attrs.get("metric")
        if metric not in params or any(array == n or array.startswith(n + "_") for n in names):
            continue
        axes = [d for d in dimension_names(group[array]) if d not in ("sample", "target", "slot")]
        if axes and attrs.get("params") != params[metric]:
            raise StoreExistsError(
                f"{where!r} keeps {array} with other {metric} parameters ({attrs.get('params')}), on the axis "
                f"{axes[0]!r} these scores would change; score its method too (methods=), or write to another store."
            )


def dimension_names(array: Any) -> tuple[str, ...]:
    """The xarray dimensions of a zarr (format 3) array of a store, () where it names none."""
    return tuple(name for name in (array.metadata.dimension_names or ()) if name is not None)


def add_to_store(ds: xr.Dataset, store: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Add ``ds``'s variables (and coordinates the store lacks) to an existing store, each array whole.

    They are written, checksummed and chunked per sample like the maps, into a hidden sibling
    store, then each array folder is renamed into the store and the metadata consolidated again:
    a crash leaves every array either absent or complete. Variables the store already has are an
    error unless ``overwrite=True``; a coordinate it has must hold the same values.
    """
    target = Path(store)
    check_can_add(target, [str(name) for name in ds.data_vars], overwrite=overwrite)
    group = zarr.open_group(os.fspath(target), mode="r")
    present = set(group.array_keys())
    replaced: set[str] = set()
    for name in ds.dims:
        if name not in ds.coords or name not in present:
            continue
        stored = np.asarray(group[name][:]).tolist()
        if [str(v) for v in stored] != [str(v) for v in np.asarray(ds[name].values).tolist()]:
            # A curve axis may change with the variables on it, when every one of them is replaced.
            kept = [a for a in sorted(present - {name} - set(ds.data_vars)) if name in dimension_names(group[a])]
            if not overwrite or kept:
                raise StoreExistsError(
                    f"{os.fspath(store)!r} has a coordinate {name!r} with other values"
                    f"{' (' + ', '.join(kept[:5]) + ' use it)' if kept else ''}; write to another store, "
                    "or use the same parameters."
                )
            replaced.add(str(name))
    moved = [name for name in ds.variables if name in ds.data_vars or name not in present or name in replaced]
    temporary = partial_name(target, "adding")
    ds = stable_strings(ds)
    try:
        with quiet_consolidation():
            ds.to_zarr(
                temporary, mode="w-", encoding=sample_chunks(ds), consolidated=False, zarr_format=3,
                write_empty_chunks=True,
            )  # fmt: skip
        kill_point("add")
        for name in moved:
            if (target / name).exists():
                shutil.rmtree(target / name)
            os.replace(temporary / name, target / name)
        consolidate(target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


@dataclass(frozen=True)
class StoreReport:
    """What :func:`verify_store` found: samples done, and the damaged ones with their damaged variables."""

    path: str
    samples: int
    done: int
    damaged: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every sample is done."""
        return self.done == self.samples

    @property
    def ok(self) -> bool:
        """Complete and nothing damaged: the store can be read as it is."""
        return self.complete and not self.damaged

    def summary(self) -> str:
        """A few lines for people: samples done, and the damaged ones with their variables."""
        lines = [f"{self.path}: {self.done} of {self.samples} samples done"]
        if self.damaged:
            lines.append(f"{len(self.damaged)} damaged samples (missing or corrupt chunks):")
            lines += [f"  {sample}: {', '.join(names)}" for sample, names in list(self.damaged.items())[:20]]
            if len(self.damaged) > 20:
                lines.append(f"  ... and {len(self.damaged) - 20} more")
        return "\n".join(lines)


def damaged_positions(group: zarr.Group, done: np.ndarray, *, read: bool) -> dict[int, list[str]]:
    """Positions of done samples whose chunks are missing or, with ``read``, fail their checksum.

    Every per-sample array counts (maps, deltas, scores, input checksums, slot targets). With
    ``read``, each chunk's bytes are read and their crc32c compared with the one zarr stored after
    them; nothing is decompressed.
    """
    found: dict[int, list[str]] = {}
    positions = np.flatnonzero(done)
    root = Path(str(group.store.root)) / group.path
    for name, array in group.arrays():
        if name == "sample" or array.ndim == 0 or _dims(array)[:1] != ("sample",):
            continue
        rest = ("0",) * (array.ndim - 1)
        for i in positions:
            chunk = root.joinpath(name, "c", str(int(i)), *rest)
            missing = name != DONE and not chunk.is_file()  # an unwritten done flag is False, not lost
            if missing or (read and chunk.is_file() and not _checksum_holds(chunk)):
                found.setdefault(int(i), []).append(name)
    return found


def _checksum_holds(chunk: Path) -> bool:
    data = chunk.read_bytes()
    return len(data) >= 4 and google_crc32c.value(data[:-4]) == int.from_bytes(data[-4:], "little")


def read_flags(group: zarr.Group) -> tuple[np.ndarray, list[int]]:
    """The ``done`` flags, and the positions whose flag chunk is unreadable (read as not done)."""
    try:
        return np.asarray(group[DONE][:], dtype=bool), []
    except Exception:  # a damaged flag chunk: read them one by one
        flags, broken = np.zeros(group[DONE].shape[0], dtype=bool), []
        for i in range(len(flags)):
            try:
                flags[i] = bool(group[DONE][i])
            except Exception:
                broken.append(i)
        return flags, broken


def _dims(array: zarr.Array) -> tuple[str, ...]:
    return tuple(array.metadata.dimension_names or ())


def verify_store(store: str | os.PathLike[str], *, read: bool = True) -> StoreReport:
    """Check a store: which samples are done, and which done samples have missing or corrupt chunks.

    ``read=False`` only checks that every chunk exists; ``read=True`` also reads every chunk of
    every done sample and tests its checksum (reading the store's bytes once, decompressing none).
    """
    if not os.path.exists(store):
        raise FileNotFoundError(f"No zarr store at {os.fspath(store)!r}.")
    try:
        group = zarr.open_group(os.fspath(store), mode="r")
    except Exception as exc:  # zarr raises several kinds for folders that are not stores
        raise StoreDamagedError(f"{os.fspath(store)!r} is not a readable zarr store: {exc}") from exc
    try:
        ids = np.asarray(group["sample"][:]).tolist() if "sample" in group else []
    except Exception as exc:  # zarr raises several kinds for corrupt chunks
        raise StoreDamagedError(
            f"{os.fspath(store)!r}: its sample ids are unreadable ({exc}); delete the store and run again."
        ) from exc
    broken: list[int] = []
    if DONE in group:
        done, broken = read_flags(group)
    else:
        done = np.ones(len(ids), dtype=bool)
    damaged = damaged_positions(group, done, read=read) if ids else {}
    for i in broken:
        damaged.setdefault(i, []).append(DONE)
    intact = int(sum(1 for i in np.flatnonzero(done) if int(i) not in damaged))
    return StoreReport(
        path=os.fspath(store),
        samples=len(ids),
        done=intact,
        damaged={str(ids[i]): names for i, names in sorted(damaged.items())},
    )


def open_maps(store: str | os.PathLike[str], *, verify: bool = False) -> xr.Dataset:
    """Open a store written by xai_bench lazily, with coordinates and provenance.

    Every chunk of a done sample must exist (a missing one raises :class:`StoreDamagedError`);
    ``verify=True`` also reads them all, testing their checksums (a damaged chunk read
    later raises zarr's checksum error either way). A store that a run has not finished opens
    with a warning that says how many samples are done. String coordinates (sample ids,
    target names) come back as ordinary numpy strings.
    """
    report = verify_store(store, read=verify)
    if report.damaged:
        raise StoreDamagedError(
            f"{report.summary()}\nRun the same xai_bench.run(...) again to recompute them, or write a new store."
        )
    if not report.complete:
        warn(
            f"{os.fspath(store)!r} is incomplete: {report.done} of {report.samples} samples done; the others "
            "read as NaN. Run the same xai_bench.run(...) again to finish it.",
        )
    ds = _in_method_order(xr.open_zarr(store))
    try:
        return ds.assign_coords({name: _plain_strings(ds[name]) for name in ds.coords if _is_string(ds[name])})
    except Exception as exc:  # a corrupt chunk of a per-sample string coordinate (slot targets)
        raise StoreDamagedError(
            f"{os.fspath(store)!r}: a coordinate has damaged chunks ({exc}); `xai-bench verify` lists the samples, "
            "and the same xai_bench.run(...) again recomputes them."
        ) from exc


def _in_method_order(ds: xr.Dataset) -> xr.Dataset:
    """``ds``'s variables in the order the methods were asked for, each with its own (``<method>_delta``,
    scores); the rest after them. zarr lists arrays by name."""
    methods = method_ids(ds)
    ordered = [
        name
        for method in methods
        for name in ds.data_vars
        if name == method or (str(name).startswith(f"{method}_") and name not in methods)
    ]
    ordered = list(dict.fromkeys(ordered))
    return ds[ordered + [name for name in ds.data_vars if name not in ordered]]


def _is_string(var: xr.DataArray) -> bool:
    return var.dtype.kind in "OUT"


def _plain_strings(var: xr.DataArray) -> xr.Variable:
    # zarr returns variable-length strings as numpy's StringDType, which xarray cannot promote
    # (idxmax, where); fixed-width unicode behaves like any other numpy array.
    return xr.Variable(var.dims, np.asarray(np.asarray(var.values).tolist(), dtype=str), attrs=var.attrs)
