"""``run``: explain a whole data set into a zarr store, resumably, on one machine or a dask cluster."""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .attributors.base import json_safe
from .errors import InvalidInputError, InvalidParameterError
from .explain import MethodsArg, explain, resolve_methods
from .preflight import eval_mode
from .provenance import model_fingerprint, to_json
from .results import open_maps
from .store import check_run, create_template, write_block
from .targets import Task

ModelArg = nn.Module | str | Callable[[], nn.Module]


@dataclass(frozen=True)
class RunSummary:
    """What a call of :func:`run` did."""

    store: Path
    computed: int  # samples explained by this call
    skipped: int  # samples already done in the store

    def open(self):
        return open_maps(self.store)


def load_factory(spec: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Return a model factory from a callable or a ``"package.module:function"`` string."""
    if callable(spec):
        return spec
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise InvalidParameterError(f"model factory {spec!r} must look like 'package.module:function'.")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidParameterError(f"cannot load model factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise InvalidParameterError(f"model factory {spec!r} is not callable.")
    return factory


def build_model(model: ModelArg) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    built = load_factory(model)()
    if not isinstance(built, nn.Module):
        raise InvalidParameterError(f"the model factory returned {type(built).__name__}, not a torch.nn.Module.")
    return built


def _item(dataset: Any, index: int) -> tuple[Tensor, Any]:
    """Return (image (C, H, W), sample id or None) for one dataset item."""
    item = dataset[index]
    if isinstance(item, Tensor):
        return item, None
    if isinstance(item, Mapping):
        return item["image"], item.get("id")
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
        found = item[1] if len(item) > 1 and isinstance(item[1], (str, int, np.integer)) else None
        return item[0], found
    raise InvalidInputError(
        f"dataset item {index} is a {type(item).__name__}; expected an image tensor, (image, id, ...) "
        "or a dict with 'image' and 'id'."
    )


def sample_ids_of(dataset: Any) -> list[Any]:
    ids = getattr(dataset, "sample_ids", None)
    ids = list(ids) if ids is not None else list(range(len(dataset)))
    if len(ids) != len(dataset) or len(set(ids)) != len(ids):
        raise InvalidInputError("dataset.sample_ids must hold one unique id per item.")
    return ids


def _load(dataset: Any, indices: Sequence[int], ids: Sequence[Any]) -> Tensor:
    images = []
    for i in indices:
        image, found = _item(dataset, int(i))
        if found is not None and str(found) != str(ids[i]):
            raise InvalidInputError(f"dataset item {i} has id {found!r} but dataset.sample_ids says {ids[i]!r}.")
        images.append(image)
    return torch.stack(images)


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
    batch_size: int | str = "auto",
    memory_budget: int | str | None = None,
    samples_per_block: int = 8,
    device: str | torch.device | None = None,
    client: Any = None,
    progress: bool = True,
) -> RunSummary:
    """Explain every sample of ``dataset`` into the zarr ``store``, resuming where a previous run stopped.

    ``dataset`` is map-style (``len`` and indexing; a DataLoader's ``.dataset`` is used) and
    yields image tensors (C, H, W), ``(image, id, ...)`` tuples or dicts with ``image`` and ``id``;
    its ``sample_ids`` attribute, if any, names the samples. Samples are explained
    ``samples_per_block`` at a time and marked done once on disk, so memory does not grow with
    the data set and a killed run, started again with the same arguments, recomputes nothing it
    finished. A store written with other methods, parameters, weights, targets or data is refused.
    With a dask ``client``, ``model`` must be a factory (a callable or ``"module:function"``)
    that each worker calls; workers write their samples' regions of the same store.
    """
    dataset = getattr(dataset, "dataset", dataset) if isinstance(dataset, torch.utils.data.DataLoader) else dataset
    if client is not None and isinstance(model, nn.Module):
        raise InvalidParameterError(
            "with a dask client, pass a model factory (a function or 'module:function'), not a model object: "
            "each worker builds its own model."
        )
    if isinstance(samples_per_block, bool) or not isinstance(samples_per_block, int) or samples_per_block < 1:
        raise InvalidParameterError(f"samples_per_block must be a positive int, got {samples_per_block!r}.")
    net = build_model(model)
    if device is not None:
        net = net.to(device)
    ids = sample_ids_of(dataset)
    if not ids:
        raise InvalidInputError("the dataset is empty.")
    # What makes two runs the same run, besides the model, the methods and the data.
    options = {
        "targets": json_safe(targets.tolist() if isinstance(targets, Tensor) else targets),
        "labels": list(labels) if labels else None,
        "task": task,
        "threshold": threshold,
    }
    explain_args = {
        "methods": methods, "labels": labels, "task": task, "threshold": threshold, "targets": targets,
        "batch_size": batch_size, "memory_budget": memory_budget,
    }  # fmt: skip
    specs_json = to_json({s.entry.id: s.attributor.params() for s in resolve_methods(methods)})
    first_image = _load(dataset, [0], ids)
    with eval_mode(net):
        fingerprint = _fingerprint(net, specs_json, options, ids, tuple(first_image.shape[1:]))
    store = Path(store)
    if store.exists():
        skipped = int(check_run(store, fingerprint, len(ids)).sum())
    else:
        skipped = 0
        block = list(range(min(samples_per_block, len(ids))))
        first = _explain_block(net, dataset, block, ids, explain_args, device)
        create_template(store, first, ids, fingerprint)
        write_block(store, first, block)
    done = check_run(store, fingerprint, len(ids))
    pending = np.flatnonzero(~done)
    blocks = [pending[i : i + samples_per_block].tolist() for i in range(0, len(pending), samples_per_block)]
    bar = tqdm(total=len(ids), initial=int(done.sum()), desc="run", unit="sample", disable=not progress)
    if client is None:
        for block in blocks:
            ds = _explain_block(net, dataset, block, ids, explain_args, device)
            write_block(store, ds, block)
            bar.update(len(block))
    else:
        from .distributed import run_on_cluster

        for n_done in run_on_cluster(client, model, dataset, blocks, ids, explain_args, store, device):
            bar.update(n_done)
    bar.close()
    # Counted from the flags: a task whose worker died after writing still finished its samples.
    finished = int(check_run(store, fingerprint, len(ids)).sum())
    if finished != len(ids):
        raise RuntimeError(f"{len(ids) - finished} samples of {os.fspath(store)!r} are not done; run again to finish.")
    return RunSummary(store, finished - skipped, skipped)


def _explain_block(net, dataset, block, ids, explain_args, device):
    x = _load(dataset, block, ids)
    if device is not None:
        x = x.to(device)
    return explain(net, x, sample_ids=[ids[i] for i in block], **explain_args)
