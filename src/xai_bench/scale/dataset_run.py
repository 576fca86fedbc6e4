"""``run``: explain a whole data set into a zarr store, resumably, on one machine or a dask cluster."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..api.job import JOB_PARAMETERS, ExplainJob, MethodsArg
from ..api.outputs import scored
from ..api.passes import Passes
from ..api.preflight import eval_mode, on_device
from ..api.targets import Targets
from ..core.checks import positive_int, to_json
from ..core.errors import (
    InvalidInputError,
    InvalidParameterError,
    StoreDamagedError,
    StoreExistsError,
    renamed,
    warn,
)
from ..core.provenance import model_fingerprint
from ..engine.progress import progress_bar
from ..storage.datasets import string_coordinate
from ..storage.sample_store import SampleStore
from ..storage.zarr_io import open_maps, verify_store
from .blocks import checksums, explain_block, load, sample_ids_of
from .factories import ModelArg, build_model

#: run's parameters besides the model and the data
RUN_PARAMETERS = [*JOB_PARAMETERS, "store", "samples_per_block", "client", "checksums"]


@dataclass(frozen=True)
class RunSummary:
    """What a call of :func:`run` did."""

    store: Path
    computed: int  # samples explained by this call (whole blocks: with a missing sample, its neighbours too)
    skipped: int  # samples already done in the store and kept

    def open(self):
        """The store's maps, opened lazily (:func:`xai_bench.open_maps`)."""
        return open_maps(self.store)


def _fingerprint(model: nn.Module, specs_json: str, options: Mapping[str, Any], ids: Sequence[Any], shape) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        model_fingerprint(model),
        specs_json,
        to_json(dict(options)),
        to_json([str(i) for i in ids]),
        str(shape),
    ):
        digest.update(part.encode())
    return digest.hexdigest()


def run(
    model: ModelArg,
    inputs: Any = None,
    *,
    methods: MethodsArg,
    store: str | os.PathLike[str],
    targets: Targets | object = "predicted",
    passes: Passes | int | str | dict | None = None,
    store_inputs: bool = False,
    input_normalization: Any = None,
    samples_per_block: int = 8,
    client: Any = None,
    checksums: bool = True,
    **deprecated_keywords: Any,
) -> RunSummary:
    """Explain every sample of the data set ``inputs`` into the zarr ``store``, resuming where a previous
    run stopped.

    ``methods``, ``targets``, ``passes``, ``store_inputs`` and ``input_normalization`` mean what they mean
    for :func:`explain` (one specification, sent to every block and worker), but the bar counts samples
    and ``store_inputs`` is off by default: on a large data set the images can outweigh the maps.
    ``input_normalization`` is by default the data set's own attribute, which
    :class:`~xai_bench.scale.image_folder.ImageFolder` sets.

    ``inputs`` is map-style (``len`` and indexing; a DataLoader's ``.dataset`` is used) and yields
    items as :mod:`xai_bench.api.items` reads them (image tensors (C, H, W), ``(image, label, ...)``
    tuples, or dicts with ``image`` and ``id``); its ``sample_ids`` attribute, if any, names the
    samples. Samples are explained ``samples_per_block`` at a time and marked done once on disk, so
    memory does not grow with the data set and a killed run, started again with the same arguments,
    recomputes nothing it finished. A store written with other methods, parameters, weights, targets
    or sample ids is refused. On a resume, done samples whose chunks are missing or fail their
    checksums, and done samples whose input image changed since (each sample's checksum is stored),
    are recomputed with a warning that names them; this reads the store's bytes and the done samples'
    images once. ``checksums=False`` skips both and only looks for missing chunks. With a dask
    ``client``, ``model`` must be a factory (a callable or ``"module:function"``) that each worker
    calls; workers write their samples' regions of the same store.

    The keywords of 0.2 (``dataset=``, ``verify=``; ``batch_size``, ``memory_budget``, ``device``, ``progress``;
    ``labels``, ``task``, ``threshold``, ``max_targets``) still work in 0.3, with a
    ``DeprecationWarning`` that names their new place.
    """
    inputs = renamed(deprecated_keywords, "run", "dataset", "inputs", inputs)
    checksums = renamed(deprecated_keywords, "run", "verify", "checksums", checksums, True)
    if inputs is None:
        raise InvalidInputError("run() needs the data set to explain: run(model, inputs, methods=..., store=...).")
    dataset = getattr(inputs, "dataset", inputs) if isinstance(inputs, torch.utils.data.DataLoader) else inputs
    if client is not None and isinstance(model, nn.Module):
        raise InvalidParameterError(
            "with a dask client, pass a model factory (a function or 'module:function'), not a model object: "
            "each worker builds its own model."
        )
    positive_int("samples_per_block", samples_per_block)
    job = ExplainJob.build(
        methods=methods, targets=targets, passes=passes, store_inputs=store_inputs,
        input_normalization=input_normalization if input_normalization is not None
        else getattr(dataset, "input_normalization", None),
        old=deprecated_keywords, where="run", accepted=RUN_PARAMETERS,
    )  # fmt: skip
    _check_works_in_blocks(job)
    net = build_model(model)
    chosen = job.passes.chosen_device()
    # A model object is the user's: it goes back where it was, bit for bit, when the run ends.
    with on_device(net, chosen):
        work = _Run.begin(model, net, dataset, job, Path(store), chosen, samples_per_block, client, checksums)
        computed = work.execute()
        work.check_finished()
        return RunSummary(work.store, computed, len(work.ids) - computed)


def _check_works_in_blocks(job: ExplainJob) -> None:
    for entry, attributor in job.specs:
        why = attributor.works_in_blocks()
        if why:
            raise InvalidParameterError(
                f"{entry.id}: run() explains a data set block by block, but {why}; use explain() on the whole "
                "set, or a baseline (baseline=) or a set of them (baselines=) shared by every sample."
            )


@dataclass
class _Run:
    """One call of :func:`run`: the data set, its ids, the job fixed for it, and the store it fills."""

    model: Any  # as given: a factory is what dask workers call
    net: nn.Module
    explained: nn.Module  # net, ending in the explained output's head when it is not the logits
    dataset: Any
    ids: list[Any]
    job: ExplainJob
    store: Path
    target: SampleStore
    chosen: Any
    samples_per_block: int
    client: Any
    checksums: bool
    fingerprint: str

    @classmethod
    def begin(cls, model, net, dataset, job, store, chosen, samples_per_block, client, checksums) -> _Run:
        ids = sample_ids_of(dataset)
        if not ids:
            raise InvalidInputError("the dataset is empty.")
        first_image = load(dataset, [0], ids)
        # Every block must have the same slot width (taken from the whole argument, not a block), and
        # every block's images are checked against the first sample's shape, by sample id.
        job = replace(job, targets=job.targets.for_samples(len(ids)), image_shape=tuple(first_image.shape[1:]))
        with eval_mode(net):
            fingerprint = _fingerprint(net, job.specs_json(), job.options(), ids, job.image_shape)
        # One head for every block, so that what is measured and prepared on it serves them all.
        explained = scored(net, job.targets.output)
        return cls(model, net, explained, dataset, ids, job, store, SampleStore(store), chosen, samples_per_block,
                   client, checksums, fingerprint)  # fmt: skip

    def block(self, indices: list[int]):
        return explain_block(self.explained, self.dataset, indices, self.ids, self.job, self.chosen)

    def execute(self) -> int:
        """Create or check the store, then explain every block not done; return the samples explained."""
        n, per_block = len(self.ids), self.samples_per_block
        # Shown from the start: the first block, which creates the store, may be the longest wait.
        # Targets are known per block only: one per sample, as "predicted" has on a multiclass model.
        per_image = sum(c.items * c.images for c in (a.cost(self.job.image_shape) for _, a in self.job.specs))
        bar = progress_bar(self.job.passes.progress, planned_images=n * per_image, total=n, desc="run", unit="sample")
        try:
            computed = self._start(list(range(min(per_block, n))))
            # Work goes in the same blocks as an uninterrupted run (block k holds samples k*B .. k*B+B-1),
            # all of a block's samples again where any is not done: passes then hold the same images as
            # they did, so the recomputed maps equal the lost ones bit for bit at a fixed batch_size.
            undone = np.flatnonzero(~self.target.done())
            blocks = [list(range(k * per_block, min((k + 1) * per_block, n)))
                      for k in sorted({int(i) // per_block for i in undone})]  # fmt: skip
            computed += sum(len(b) for b in blocks)
            if blocks:  # before any map changes: metrics of the old maps must not outlive them
                _drop_added(self.target, "were computed from samples this run computes again")
            bar.update(n - len(undone))
            self._explain(blocks, set(undone.tolist()), bar)
        except BaseException:
            # An error ends the call: the bar leaves its line, so that the message is a line of its own.
            bar.leave = False
            bar.close()
            raise
        bar.close()
        return computed

    def _start(self, first_block: list[int]) -> int:
        """Create the store from the first block (returning its size), or check and repair the one there."""
        if not self.target.exists():
            first = self.block(first_block)
            try:
                self.target.create(first, first_block, self.ids, self.fingerprint)
                return len(first_block)
            except StoreExistsError:
                pass  # another process created it meanwhile: resume it like any existing store
        self.target.check(self.fingerprint, len(self.ids))
        _repair(self.target, self.dataset, self.ids, read=self.checksums, fresh=lambda: self.block(first_block))
        return 0

    def _explain(self, blocks: list[list[int]], missing: set[int], bar) -> None:
        if self.client is None:
            for block in blocks:
                self.target.write(self.block(block), block)
                bar.update(sum(i in missing for i in block))
            return
        from .cluster import run_on_cluster

        for n_done in run_on_cluster(self.client, self.model, self.dataset, blocks, self.ids, self.job, self.store,
                                     self.chosen, model_fingerprint(self.net)):  # fmt: skip
            bar.update(n_done)

    def check_finished(self) -> None:
        """Say the run succeeded only of a store whose every sample is done and that reads back whole."""
        # Counted from the flags: a task whose worker died after writing still finished its samples.
        finished = int(self.target.done().sum())
        if finished != len(self.ids):
            raise RuntimeError(
                f"{len(self.ids) - finished} samples of {os.fspath(self.store)!r} are not done; run again to finish."
            )
        report = verify_store(self.store, checksums=False)  # chunks listed, coordinates checked
        if not report.ok:
            damaged = [*report.damaged_arrays, *(f"{i}: {', '.join(n)}" for i, n in report.damaged.items())]
            raise StoreDamagedError(
                f"{os.fspath(self.store)!r} is still damaged after the run ({'; '.join(damaged[:3])}"
                f"{' ...' if len(damaged) > 3 else ''}); delete the store and run again."
            )


def _drop_added(target: SampleStore, why: str) -> None:
    """Delete the arrays ``evaluate`` added to the store, with a warning that names them."""
    added = target.added()
    if added:
        warn(
            f"{os.fspath(target.path)!r}: dropping {', '.join(added)}, which {why}; run evaluate(..., into=) "
            "again for them."
        )
        target.drop(added)


def _repair(target: SampleStore, dataset: Any, ids: Sequence[Any], *, read: bool, fresh: Any) -> None:
    """Rebuild damaged coordinates, drop damaged metrics, and mark undone the done samples whose chunks
    are damaged or whose input image changed since. ``fresh()`` explains the first block again, for
    coordinates that only the run's arguments give. ``read`` reads every chunk's checksum and the done
    samples' images (run's ``checksums``)."""
    found = target.damaged(read=read)
    added = set(target.added())
    if any(name in added for name in found.arrays) or any(set(n) & added for n in found.samples.values()):
        _drop_added(target, "have missing or damaged chunks")
        found = target.damaged(read=read)
    if found.arrays:
        _rebuild(target, found.arrays, ids, fresh)
    damaged = sorted(found.samples)
    target.mark_undone(damaged, discard=True)
    changed: list[int] = []
    if read:
        positions = np.flatnonzero(target.done())
        stored = target.input_checksums()[positions]
        changed = [
            int(p) for p, old in zip(positions, stored, strict=True) if checksums(dataset, [int(p)], ids)[0] != old
        ]
        target.mark_undone(changed)
    for what, found in (("have missing or damaged chunks", damaged), ("changed since they were explained", changed)):
        if found:
            names = [str(ids[i]) for i in found]
            warn(
                f"{len(found)} samples of {os.fspath(target.path)!r} {what}; recomputing them: "
                f"{names[:10]}{' ...' if len(names) > 10 else ''}"
            )


def _rebuild(target: SampleStore, names: Sequence[str], ids: Sequence[Any], fresh: Any) -> None:
    values: dict[str, Any] = {}
    block = fresh() if set(names) - {"sample"} else None
    for name in names:
        if name == "sample":
            values[name] = string_coordinate(ids)
        elif block is not None and name in block.variables and block[name].dims[:1] != ("sample",):
            values[name] = block[name].values
        else:
            raise StoreDamagedError(
                f"{os.fspath(target.path)!r}: array {name!r} is damaged and cannot be rebuilt from the run's "
                "arguments; delete the store and run again."
            )
    target.rebuild(values)
    warn(f"{os.fspath(target.path)!r}: {', '.join(names)} had missing or damaged chunks; rebuilt them.")
