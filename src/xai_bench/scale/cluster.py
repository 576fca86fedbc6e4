"""Shard a :func:`xai_bench.run` over dask workers; each builds its model once from a factory."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from ..api.job import ExplainJob

# A worker runs tasks in several threads: each model is built once per (factory, device) and used by
# one task at a time (explaining sets the model's modes and caches on it). The one kept is replaced
# when the driver's fingerprint changes (a new checkpoint behind the same factory), and checked
# against it before every block, so a block is never explained with other weights than the run's.
_models: dict[str, tuple[Any, threading.Lock, str]] = {}
_building = threading.Lock()


def _worker_model(factory: Any, device: Any, fingerprint: str, *, fresh: bool = False) -> tuple[Any, threading.Lock]:
    from .factories import build_model

    key = f"{factory!r}:{device!r}"
    with _building:
        cached = _models.get(key)
        if cached is None or cached[2] != fingerprint or fresh:
            _models.pop(key, None)  # its weights are not the run's: let it go before building anew
            net = build_model(factory)
            net = net.to(device) if device is not None else net
            _models[key] = (net, threading.Lock(), fingerprint)
        net, lock, _ = _models[key]
    return net, lock


def _check_fingerprint(net: Any, factory: Any, fingerprint: str) -> None:
    from ..core.errors import InvalidInputError
    from ..core.provenance import model_fingerprint

    if model_fingerprint(net) != fingerprint:
        raise InvalidInputError(
            f"the model factory {factory!r} built other weights on a worker than in the process that started the "
            "run (random weights without a checkpoint, or a checkpoint or module changed since?); every worker "
            "must explain the same model: load fixed weights in the factory, and start the run again."
        )


def explain_shard(
    factory: Any,
    dataset: Any,
    block: Sequence[int],
    ids: Sequence[Any],
    job: ExplainJob,
    store: str,
    device: Any,
    fingerprint: str,
) -> int:
    """Explain ``block`` unless all of it is done (a retried task skips a finished block); return how many
    samples were not done before."""
    from ..storage.sample_store import SampleStore
    from .blocks import explain_block

    target = SampleStore(store)
    missing = int((~target.done(block)).sum())
    if not missing:
        return 0
    from ..core.provenance import model_fingerprint

    net, lock = _worker_model(factory, device, fingerprint)
    # The whole block, as in an uninterrupted run: passes hold the same images, so maps are the same.
    # Checked per block, not per build: the kept model may have changed since (weights written in place).
    with lock:
        kept = model_fingerprint(net) == fingerprint
        block_maps = explain_block(net, dataset, block, ids, job, device) if kept else None
    if block_maps is None:  # build it again from the factory; refused if that gives other weights too
        net, lock = _worker_model(factory, device, fingerprint, fresh=True)
        with lock:
            _check_fingerprint(net, factory, fingerprint)
            block_maps = explain_block(net, dataset, block, ids, job, device)
    target.write(block_maps, block)
    return missing


def run_on_cluster(
    client: Any,
    factory: Any,
    dataset: Any,
    blocks: list[list[int]],
    ids: Sequence[Any],
    job: ExplainJob,
    store: Any,
    device: Any,
    fingerprint: str,
) -> Iterator[int]:
    """Submit one task per block and yield the number of samples each finished task wrote."""
    from dask.distributed import as_completed

    # Keys of their own per run: dask hands a task whose key it still holds (a failed run's futures kept
    # alive by an exception a caller keeps) its old result instead of running it again.
    run_key = uuid.uuid4().hex[:12]
    futures = [
        client.submit(
            explain_shard,
            factory,
            dataset,
            block,
            ids,
            job,
            str(store),
            device,
            fingerprint,
            key=f"xai-bench-block-{run_key}-{block[0]}-{len(block)}",
            pure=False,
        )
        for block in blocks
    ]
    for future in as_completed(futures):
        yield future.result()
