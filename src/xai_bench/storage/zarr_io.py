"""Write and read result Datasets as zarr (format 3): one chunk per sample, each with a checksum.

Every chunk is compressed with zstd and then carries a crc32c checksum (zarr v3's ``crc32c``
codec), so a damaged chunk raises an error when read instead of returning wrong values; chunks
are written even where they hold only the fill value, so a missing chunk always means a lost
one. Stores carry consolidated metadata, so plain ``xarray.open_zarr`` opens them too.

The codec's checksum does not know where a chunk belongs, so a second one binds every chunk to
its place: crc32c over ``"<array>/<chunk key>"`` and the chunk's bytes. Arrays written whole
(coordinates, everything ``explain`` and ``evaluate`` write) keep them in a ``.checksums.json``
beside their chunks; the per-sample arrays of a ``run`` store, written by many processes, keep
one record per sample in the ``done`` array's folder (``done/.sample_checksums/``). Stores with
none of these (older versions) are checked as before. Nothing is added at the root, where zarr
would take a file it does not know for a broken member.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ..core.errors import StoreDamagedError, StoreExistsError, refuse_unknown, renamed, warn
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


#: in an array's folder: the bound checksum of each chunk of an array written whole
SEALS = ".checksums.json"
#: in a ``run`` store: one file per sample position with the bound checksums of its chunks
RECORDS = f"{DONE}/.sample_checksums"
#: a hidden partial folder whose writer cannot be asked (another host, an older version) is
#: removed once it is this old (seconds)
STALE_AFTER = 24 * 3600
_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()
_KINDS = ("partial", "adding", "old")


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
    """A hidden sibling of ``target`` to write into before renaming it into place.

    Its name carries this host and process, so that a later writer can tell a folder left by a
    killed process from one still being written.
    """
    return target.with_name(f".{target.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def remove_stale_partials(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the hidden partial folders of ``target`` left by writers that were killed; return them.

    A folder of this host is stale when the process named in it has ended; one of another host,
    or without a process in its name, when it is older than ``STALE_AFTER``.
    """
    target = Path(target)
    removed: list[Path] = []
    # ours: .NAME.<host>-<pid>-<random>.<kind>; older versions': .NAME.<12 hex>.<kind>
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.(?:(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-[0-9a-f]{{8}}|[0-9a-f]{{12}})"
        rf"\.(?:{'|'.join(_KINDS)})"
    )
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        found = pattern.fullmatch(path.name)
        if not found or not path.is_dir():
            continue
        if found["host"] == _HOST:
            stale = not _alive(int(found["pid"]))
        else:
            try:
                stale = time.time() - path.stat().st_mtime > STALE_AFTER
            except OSError:
                continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block is done, then deliver it.

    zarr writes from a thread of its own: a KeyboardInterrupt in the main thread would unwind
    (and delete a half-built folder) while that thread still writes into it. Outside the main
    thread, where no signal arrives, or where the handler was not set from Python (and so could not
    be put back), this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def written_by_xai_bench(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a zarr store this library wrote: a group with its provenance."""
    path = Path(path)
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attributes = meta.get("attributes") if isinstance(meta, dict) else None
    return meta.get("node_type") == "group" and isinstance(attributes, dict) and "xai_bench_version" in attributes


def sealed(store: str | os.PathLike[str]) -> bool:
    """Whether ``store`` keeps bound checksums (see the module's docstring); older versions' do not."""
    root = Path(store)
    return (root / RECORDS).is_dir() or any(path.is_file() for path in root.glob(f"*/{SEALS}"))


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def chunk_crc(name: str, key: str, data: bytes) -> int:
    """crc32c of a chunk bound to its place: over ``"<array>/<key>"``, then its bytes but the last four.

    Those are the codec's crc32c of the others, which :func:`_holds` checks too; a crc32c over
    bytes that end in their own crc32c is the same whatever the bytes (the crc's residue), so it
    must not run over them.
    """
    return google_crc32c.extend(google_crc32c.value(f"{name}/{key}".encode()), data[:-4])


def chunk_key(position: int, ndim: int) -> str:
    """The key of a per-sample array's chunk (one per sample) at ``position``."""
    return "/".join(("c", str(int(position)), *("0",) * (ndim - 1)))


def _chunk_keys(folder: Path) -> list[str]:
    grid = folder / "c"
    if grid.is_file():  # a 0-d array
        return ["c"]
    if not grid.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in grid.rglob("*") if p.is_file() and p.name.isdigit())


def seal(store: str | os.PathLike[str], names: Sequence[str], **fields: Any) -> None:
    """Write the bound checksum of every chunk of the arrays ``names`` (written whole) beside them."""
    root = Path(store)
    for name in names:
        folder = root / name
        sums = {key: chunk_crc(name, key, (folder / key).read_bytes()) for key in _chunk_keys(folder)}
        write_json(folder / SEALS, {"array": name, **fields, "chunks": sums})


def seals_of(store: str | os.PathLike[str], name: str) -> dict[str, Any] | None:
    """The contents of array ``name``'s ``.checksums.json``: None without one, ``{}`` if unreadable."""
    path = Path(store) / name / SEALS
    if not path.exists():
        return None
    found = read_json(path)
    ok = isinstance(found, dict) and found.get("array") == name and isinstance(found.get("chunks"), dict)
    return found if ok else {}


def record_samples(store: str | os.PathLike[str], arrays: dict[str, int], positions: Sequence[int]) -> None:
    """Write each sample's record: the bound checksums of its chunk of every array in ``arrays`` (name: ndim)."""
    root = Path(store)
    for position in positions:
        chunks = {}
        for name, ndim in arrays.items():
            key = chunk_key(position, ndim)
            chunks[f"{name}/{key}"] = chunk_crc(name, key, (root / name / key).read_bytes())
        write_json(root / RECORDS / f"{int(position)}.json", {"position": int(position), "chunks": chunks})


def forget_samples(store: str | os.PathLike[str], positions: Sequence[int]) -> None:
    """Delete the records of ``positions``."""
    for position in positions:
        (Path(store) / RECORDS / f"{int(position)}.json").unlink(missing_ok=True)


def move_into_place(temporary: Path, target: Path, *, overwrite: bool = False) -> None:
    """Rename a finished ``temporary`` store to ``target`` (replacing it with ``overwrite``)."""
    retired = None
    if overwrite and target.exists():
        _check_replaceable(target)
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
    """Refuse, before any work, to write over an existing store unless ``overwrite``, and over anything
    that is not a store of this library even then."""
    target = Path(store)
    if not target.exists():
        return
    if target.is_dir() and not overwrite:
        raise StoreExistsError(
            f"{os.fspath(store)!r} exists already. Pass overwrite=True to replace it, write to a new path, "
            "or use xai_bench.run(...) to resume a store it wrote."
        )
    _check_replaceable(target)


def _check_replaceable(target: Path) -> None:
    if not target.is_dir():
        raise StoreExistsError(f"{os.fspath(target)!r} is a file, not a store; remove it or choose another path.")
    if not written_by_xai_bench(target):
        raise StoreExistsError(
            f"{os.fspath(target)!r} exists and is not a store written by xai_bench, which overwrite=True alone "
            "replaces; choose another path, or remove it yourself."
        )


def save_maps(ds: xr.Dataset, store: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write ``ds`` to a zarr store (format 3), one checksummed chunk per sample for every map.

    The store is written under a temporary name beside ``store`` and renamed into place once
    complete, so a crash leaves no store that looks finished, and two writers cannot mix.
    """
    target = Path(store)
    check_writable(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    temporary = partial_name(target)
    ds = stable_strings(ds)
    with uninterrupted():
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
            seal(temporary, [str(name) for name in ds.variables])
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
    # Text as objects, since zarr v3 specifies variable-length strings only (open_maps gives fixed-width ones).
    ds = stable_strings(ds)
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
    moved = [str(name) for name in ds.variables if name in ds.data_vars or name not in present or name in replaced]
    remove_stale_partials(target)
    temporary = partial_name(target, "adding")
    with uninterrupted():
        try:
            with quiet_consolidation():
                ds.to_zarr(
                    temporary, mode="w-", encoding=sample_chunks(ds), consolidated=False, zarr_format=3,
                    write_empty_chunks=True,
                )  # fmt: skip
            # Marked as added: derived from the maps, so dropped when a resume recomputes any sample.
            if sealed(target):
                seal(temporary, moved, added=True)
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
    """What :func:`verify_store` found: samples done, the damaged ones with their damaged variables, and
    damaged arrays that are not per sample (coordinates)."""

    path: str
    samples: int
    done: int
    damaged: dict[str, list[str]] = field(default_factory=dict)
    damaged_arrays: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every sample is done."""
        return self.done == self.samples

    @property
    def ok(self) -> bool:
        """Complete and nothing damaged: the store can be read as it is."""
        return self.complete and not self.damaged and not self.damaged_arrays

    def summary(self) -> str:
        """A few lines for people: samples done, and the damaged ones with their variables."""
        lines = [f"{self.path}: {self.done} of {self.samples} samples done"]
        if self.damaged_arrays:
            lines.append(f"damaged arrays (missing, corrupt or misplaced chunks): {', '.join(self.damaged_arrays)}")
        if self.damaged:
            lines.append(f"{len(self.damaged)} damaged samples (missing, corrupt or misplaced chunks):")
            lines += [f"  {sample}: {', '.join(names)}" for sample, names in list(self.damaged.items())[:20]]
            if len(self.damaged) > 20:
                lines.append(f"  ... and {len(self.damaged) - 20} more")
        return "\n".join(lines)


@dataclass
class Damage:
    """Positions of done samples with damaged chunks (and the arrays), and damaged arrays written whole."""

    samples: dict[int, list[str]] = field(default_factory=dict)
    arrays: list[str] = field(default_factory=list)

    def add(self, position: int, name: str) -> None:
        names = self.samples.setdefault(int(position), [])
        if name not in names:
            names.append(name)


def find_damage(group: zarr.Group, done: np.ndarray, *, read: bool) -> Damage:
    """Done samples whose chunks are missing, corrupt or not where they were written, and such arrays.

    Every array counts but ``done`` (read by :func:`read_flags`): per-sample ones (maps, deltas,
    scores, input checksums, slot targets, metrics) by sample, the others (coordinates) as a
    whole. A missing chunk is found from the listing; with ``read``, each chunk's bytes are read
    once and their bound checksum compared (nothing is decompressed). One-dimensional arrays that
    are not per sample (coordinates) are read even without ``read``: they are small, and every
    map's labels depend on them.
    """
    root = Path(str(group.store.root)) / group.path
    bound = sealed(root)
    positions = [int(i) for i in np.flatnonzero(done)]
    found = Damage()
    records: dict[int, Any] = {}
    for name, array in group.arrays():
        if name == DONE:
            continue
        per_sample = name != "sample" and array.ndim > 0 and _dims(array)[:1] == ("sample",)
        seals = seals_of(root, name)
        if seals is not None:
            sums = seals.get("chunks", {})
            reading = read or (array.ndim <= 1 and not per_sample)
            if per_sample:
                for i in positions:
                    key = chunk_key(i, array.ndim)
                    if key not in sums or not _holds(root, name, key, sums[key], read=reading):
                        found.add(i, name)
            elif len(sums) != array.nchunks or any(
                not _holds(root, name, key, crc, read=reading) for key, crc in sums.items()
            ):
                found.arrays.append(name)
        elif not bound:  # an older store: the codec's checksum of each per-sample chunk only
            if per_sample:
                for i in positions:
                    chunk = root / name / chunk_key(i, array.ndim)
                    if not chunk.is_file() or (read and not _codec_holds(chunk.read_bytes())):
                        found.add(i, name)
        elif per_sample:
            for i in positions:
                if i not in records:
                    records[i] = _record(root, i)
                key = chunk_key(i, array.ndim)
                crc = (records[i] or {}).get(f"{name}/{key}")
                if crc is None or not _holds(root, name, key, crc, read=read):
                    found.add(i, name)
        else:
            found.arrays.append(name)  # its checksums are lost
    return found


def _record(root: Path, position: int) -> dict[str, int] | None:
    found = read_json(root / RECORDS / f"{position}.json")
    if not isinstance(found, dict) or found.get("position") != position or not isinstance(found.get("chunks"), dict):
        return None
    return found["chunks"]


def _holds(root: Path, name: str, key: str, crc: Any, *, read: bool) -> bool:
    chunk = root / name / key
    if not chunk.is_file():
        return False
    if not read:
        return True
    data = chunk.read_bytes()
    return _codec_holds(data) and chunk_crc(name, key, data) == crc


def _codec_holds(data: bytes) -> bool:
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


def verify_store(store: str | os.PathLike[str], *, checksums: bool = True, **deprecated_keywords: Any) -> StoreReport:
    """Check a store: which samples are done, which done samples have missing, corrupt or misplaced
    chunks, and which other arrays (coordinates) do.

    ``checksums=False`` only checks that every chunk exists (and reads the small coordinates);
    ``checksums=True`` also reads every chunk of every done sample and tests its checksum, bound to
    the array and the chunk's place (reading the store's bytes once, decompressing none). 0.2's
    ``read=`` still works, with a ``DeprecationWarning``.
    """
    read = renamed(deprecated_keywords, "verify_store", "read", "checksums", checksums, True)
    refuse_unknown(deprecated_keywords, "verify_store", ["checksums"])
    if not os.path.exists(store):
        raise FileNotFoundError(f"No zarr store at {os.fspath(store)!r}.")
    try:
        group = zarr.open_group(os.fspath(store), mode="r")
    except Exception as exc:  # zarr raises several kinds for folders that are not stores
        raise StoreDamagedError(f"{os.fspath(store)!r} is not a readable zarr store: {exc}") from exc
    n = int(group["sample"].shape[0]) if "sample" in group else 0
    broken: list[int] = []
    if DONE in group:
        done, broken = read_flags(group)
    else:
        done = np.ones(n, dtype=bool)
    found = find_damage(group, done, read=read)
    if "sample" in found.arrays:  # the ids themselves are damaged: name the samples by position
        ids: list[Any] = [f"#{i}" for i in range(n)]
    else:
        try:
            ids = np.asarray(group["sample"][:]).tolist() if "sample" in group else []
        except Exception as exc:  # zarr raises several kinds for corrupt chunks
            raise StoreDamagedError(
                f"{os.fspath(store)!r}: its sample ids are unreadable ({exc}); delete the store and run again."
            ) from exc
    damaged = found.samples
    for i in broken:
        damaged.setdefault(i, []).append(DONE)
    intact = int(sum(1 for i in np.flatnonzero(done) if int(i) not in damaged))
    return StoreReport(
        path=os.fspath(store),
        samples=n,
        done=intact,
        damaged={str(ids[i]): names for i, names in sorted(damaged.items())},
        damaged_arrays=sorted(found.arrays),
    )


def open_maps(store: str | os.PathLike[str], *, checksums: bool = False, **deprecated_keywords: Any) -> xr.Dataset:
    """Open a store written by xai_bench lazily, with coordinates and provenance.

    Every chunk of a done sample must exist (a missing one raises :class:`StoreDamagedError`);
    ``checksums=True`` also reads them all, testing their checksums (a damaged chunk read
    later raises zarr's checksum error either way). A store that a run has not finished opens
    with a warning that says how many samples are done. String coordinates (sample ids,
    target names) come back as ordinary numpy strings. 0.2's ``verify=`` still works, with a
    ``DeprecationWarning``.
    """
    checksums = renamed(deprecated_keywords, "open_maps", "verify", "checksums", checksums, False)
    refuse_unknown(deprecated_keywords, "open_maps", ["checksums"])
    report = verify_store(store, checksums=checksums)
    written_by_run = (Path(store) / DONE).is_dir()
    remedy = (
        "Run the same xai_bench.run(...) again to recompute them, or write a new store."
        if written_by_run
        else "A store written by explain() cannot be repaired: explain again with store=..., overwrite=True."
    )
    if report.damaged or report.damaged_arrays:
        raise StoreDamagedError(f"{report.summary()}\n{remedy}")
    if not report.complete:
        warn(
            f"{os.fspath(store)!r} is incomplete: {report.done} of {report.samples} samples done; the others "
            "read as NaN. Run the same xai_bench.run(...) again to finish it.",
        )
    ds = _in_method_order(xr.open_zarr(store))
    # Coordinates are read now (they are small): a damaged chunk of one (the slot layout's per-sample
    # targets) is found here, not as zarr's checksum error in a later lookup.
    try:
        return ds.assign_coords({name: _plain_strings(ds[name]) if _is_string(ds[name]) else ds[name].load().variable
                                 for name in ds.coords})  # fmt: skip
    except Exception as exc:
        raise StoreDamagedError(
            f"{os.fspath(store)!r}: a coordinate has damaged chunks ({exc}); `xai-bench verify` lists the samples. "
            + remedy
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
