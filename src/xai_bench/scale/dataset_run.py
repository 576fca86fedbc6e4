"""``run``: explain a whole data set into a zarr store, resumably, on one machine or a dask cluster."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..api.explaining import MethodsArg, resolve_methods
from ..api.outputs import check_output, scored
from ..api.preflight import check_device, eval_mode, on_device
from ..api.targets import Task, check_max_targets, check_task, check_threshold, per_sample, row_width
from ..core.checks import json_safe, positive_int, to_json
from ..core.errors import InvalidInputError, InvalidParameterError, StoreDamagedError, StoreExistsError, warn
from ..core.normalization import check_normalization
from ..core.provenance import model_fingerprint
from ..engine.progress import Progress, check_progress, progress_bar
from ..storage.datasets import string_coordinate
from ..storage.sample_store import SampleStore
from ..storage.zarr_io import open_maps, verify_store
from .blocks import checksums, explain_block, load, sample_ids_of
from .factories import ModelArg, build_model


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
    dataset: Any,
    *,
    methods: MethodsArg,
    store: str | os.PathLike[str],
    targets: object = "predicted",
    labels: Sequence[str] | None = None,
    task: Task = "multiclass",
    threshold: float = 0.5,
    max_targets: int | None = None,
    batch_size: int | str = "auto",
    memory_budget: int | str | None = None,
    samples_per_block: int = 8,
    device: str | torch.device | None = None,
    client: Any = None,
    verify: bool = True,
    progress: Progress = "auto",
    store_inputs: bool = False,
    input_normalization: Any = None,
    output: str = "logit",
) -> RunSummary:
    """Explain every sample of ``dataset`` into the zarr ``store``, resuming where a previous run stopped.

    ``dataset`` is map-style (``len`` and indexing; a DataLoader's ``.dataset`` is used) and
    yields image tensors (C, H, W), ``(image, id, ...)`` tuples or dicts with ``image`` and ``id``;
    its ``sample_ids`` attribute, if any, names the samples. Samples are explained
    ``samples_per_block`` at a time and marked done once on disk, so memory does not grow with
    the data set and a killed run, started again with the same arguments, recomputes nothing it
    finished. A store written with other methods, parameters, weights, targets or sample ids is
    refused. On a resume, done samples whose chunks are missing or fail their checksums, and done
    samples whose input image changed since (each sample's checksum is stored), are recomputed with
    a warning that names them; this reads the store's bytes and the done samples' images once.
    ``verify=False`` skips both and only looks for missing chunks. With a dask ``client``, ``model``
    must be a factory (a callable or ``"module:function"``) that each worker calls; workers write
    their samples' regions of the same store. ``store_inputs=True`` keeps the images in the store
    too (off by default: on a large data set they can outweigh the maps). ``input_normalization``
    is recorded for pictures (see :func:`explain`); ``progress`` as in :func:`explain` (the bar
    counts samples); by default it is the data set's
    ``input_normalization`` attribute, which :class:`~xai_bench.scale.image_folder.ImageFolder` sets.
    ``output`` (the logits, or their ``"sigmoid"`` or ``"softmax"``) is what the maps explain, as in
    :func:`explain`.
    """
    dataset = getattr(dataset, "dataset", dataset) if isinstance(dataset, torch.utils.data.DataLoader) else dataset
    if client is not None and isinstance(model, nn.Module):
        raise InvalidParameterError(
            "with a dask client, pass a model factory (a function or 'module:function'), not a model object: "
            "each worker builds its own model."
        )
    positive_int("samples_per_block", samples_per_block)
    check_progress(progress)
    specs = resolve_methods(methods)
    for entry, attributor in specs:
        why = attributor.works_in_blocks()
        if why:
            raise InvalidParameterError(
                f"{entry.id}: run() explains a data set block by block, but {why}; use explain() on the whole "
                "set, or a baseline (baseline=) or a set of them (baselines=) shared by every sample."
            )
    normalization = check_normalization(
        input_normalization if input_normalization is not None else getattr(dataset, "input_normalization", None)
    )
    max_targets = check_max_targets(max_targets)
    check_threshold(threshold)
    check_task(task)
    check_output(output, task)
    net = build_model(model)
    chosen = check_device(device)
    # A model object is the user's: it goes back where it was, bit for bit, when the run ends.
    with on_device(net, chosen):
        ids = sample_ids_of(dataset)
        if not ids:
            raise InvalidInputError("the dataset is empty.")
        if per_sample(targets) and not isinstance(targets, str):
            if len(targets) != len(ids):
                raise InvalidInputError(f"per-sample targets hold {len(targets)} entries for {len(ids)} samples.")
            # Every block must have the same slot width: take it from the whole argument, not a block.
            max_targets = max_targets or max(1, row_width(targets) or 0)
        # What makes two runs the same run, besides the model, the methods and the data.
        options = {
            "targets": json_safe(_listed(targets)),
            "labels": list(labels) if labels else None,
            "task": task,
            "threshold": threshold,
            "max_targets": max_targets,
            "store_inputs": bool(store_inputs),
            "input_normalization": normalization.to_json() if normalization is not None else None,
        }
        if output != "logit":  # absent for logits: stores written before output= existed resume as they were
            options["output"] = output
        explain_args = {
            "methods": methods, "labels": labels, "task": task, "threshold": threshold, "targets": targets,
            "max_targets": max_targets, "batch_size": batch_size, "memory_budget": memory_budget,
            "store_inputs": store_inputs, "input_normalization": normalization, "output": output,
        }  # fmt: skip
        specs_json = to_json({entry.id: attributor.params() for entry, attributor in specs})
        first_image = load(dataset, [0], ids)
        # Every block's images are checked against the first sample's shape, by sample id.
        explain_args["image_shape"] = tuple(first_image.shape[1:])
        with eval_mode(net):
            fingerprint = _fingerprint(net, specs_json, options, ids, tuple(first_image.shape[1:]))
        # One head for every block, so that what is measured and prepared on it serves them all.
        explained = scored(net, output)
        store = Path(store)
        target = SampleStore(store)
        computed = 0
        # Shown from the start: the first block, which creates the store, may be the longest wait.
        # Targets are known per block only: one per sample, as "predicted" has on a multiclass model.
        per_image = sum(c.items * c.images for c in (a.cost(tuple(first_image.shape[1:])) for _, a in specs))
        bar = progress_bar(progress, planned_images=len(ids) * per_image, total=len(ids), desc="run", unit="sample")
        try:
            if not target.exists():
                block = list(range(min(samples_per_block, len(ids))))
                first = explain_block(explained, dataset, block, ids, explain_args, chosen)
                try:
                    target.create(first, block, ids, fingerprint)
                    computed = len(block)
                except StoreExistsError:
                    pass  # another process created it meanwhile: resume it like any existing store
            if not computed:
                target.check(fingerprint, len(ids))
                first_block = list(range(min(samples_per_block, len(ids))))
                _repair(
                    target, dataset, ids, verify=verify,
                    fresh=lambda: explain_block(explained, dataset, first_block, ids, explain_args, chosen),
                )  # fmt: skip
            # Work goes in the same blocks as an uninterrupted run (block k holds samples k*B .. k*B+B-1),
            # all of a block's samples again where any is not done: passes then hold the same images as
            # they did, so the recomputed maps equal the lost ones bit for bit at a fixed batch_size.
            undone = np.flatnonzero(~target.done())
            blocks = [
                list(range(k * samples_per_block, min((k + 1) * samples_per_block, len(ids))))
                for k in sorted({int(i) // samples_per_block for i in undone})
            ]
            computed += sum(len(b) for b in blocks)
            if blocks:  # before any map changes: metrics of the old maps must not outlive them
                _drop_added(target, "were computed from samples this run computes again")
            bar.update(len(ids) - len(undone))
            if client is None:
                missing = set(undone.tolist())
                for block in blocks:
                    target.write(explain_block(explained, dataset, block, ids, explain_args, chosen), block)
                    bar.update(sum(i in missing for i in block))
            else:
                from .cluster import run_on_cluster

                for n_done in run_on_cluster(
                    client, model, dataset, blocks, ids, explain_args, store, chosen, model_fingerprint(net)
                ):
                    bar.update(n_done)
        except BaseException:
            # An error ends the call: the bar leaves its line, so that the message is a line of its own.
            bar.leave = False
            bar.close()
            raise
        bar.close()
        # Counted from the flags: a task whose worker died after writing still finished its samples.
        finished = int(target.done().sum())
        if finished != len(ids):
            raise RuntimeError(
                f"{len(ids) - finished} samples of {os.fspath(store)!r} are not done; run again to finish."
            )
        # Success is said only of a store that reads back whole (chunks listed, coordinates checked).
        report = verify_store(store, read=False)
        if not report.ok:
            damaged = [*report.damaged_arrays, *(f"{i}: {', '.join(n)}" for i, n in report.damaged.items())]
            raise StoreDamagedError(
                f"{os.fspath(store)!r} is still damaged after the run ({'; '.join(damaged[:3])}"
                f"{' ...' if len(damaged) > 3 else ''}); delete the store and run again."
            )
        return RunSummary(store, computed, len(ids) - computed)


def _drop_added(target: SampleStore, why: str) -> None:
    """Delete the arrays ``evaluate`` added to the store, with a warning that names them."""
    added = target.added()
    if added:
        warn(
            f"{os.fspath(target.path)!r}: dropping {', '.join(added)}, which {why}; run evaluate(..., store=) "
            "again for them."
        )
        target.drop(added)


def _repair(target: SampleStore, dataset: Any, ids: Sequence[Any], *, verify: bool, fresh: Any) -> None:
    """Rebuild damaged coordinates, drop damaged metrics, and mark undone the done samples whose chunks
    are damaged or whose input image changed since. ``fresh()`` explains the first block again, for
    coordinates that only the run's arguments give."""
    found = target.damaged(read=verify)
    added = set(target.added())
    if any(name in added for name in found.arrays) or any(set(n) & added for n in found.samples.values()):
        _drop_added(target, "have missing or damaged chunks")
        found = target.damaged(read=verify)
    if found.arrays:
        _rebuild(target, found.arrays, ids, fresh)
    damaged = sorted(found.samples)
    target.mark_undone(damaged, discard=True)
    changed: list[int] = []
    if verify:
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


def _listed(targets: object) -> object:
    if isinstance(targets, (Tensor, np.ndarray)):
        return targets.tolist()
    if isinstance(targets, (list, tuple)):
        return [_listed(t) for t in targets]
    return targets
