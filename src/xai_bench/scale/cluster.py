"""Shard a :func:`xai_bench.run` over dask workers; each builds its model once from a factory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

_models: dict[str, Any] = {}


def _worker_model(factory: Any, device: Any):
    from .factories import build_model

    key = f"{factory!r}:{device!r}"
    if key not in _models:
        net = build_model(factory)
        _models[key] = net.to(device) if device is not None else net
    return _models[key]


def explain_shard(
    factory: Any, dataset: Any, block: Sequence[int], ids: Sequence[Any], explain_args: dict, store: str, device: Any
) -> int:
    """Explain ``block`` unless all of it is done (a retried task skips a finished block); return how many
    samples were not done before."""
    from ..storage.sample_store import SampleStore
    from .blocks import explain_block

    target = SampleStore(store)
    missing = int((~target.done(block)).sum())
    if not missing:
        return 0
    net = _worker_model(factory, device)
    # The whole block, as in an uninterrupted run: passes hold the same images, so maps are the same.
    target.write(explain_block(net, dataset, block, ids, explain_args, device), block)
    return missing


def run_on_cluster(
    client: Any,
    factory: Any,
    dataset: Any,
    blocks: list[list[int]],
    ids: Sequence[Any],
    explain_args: dict,
    store: Any,
    device: Any,
) -> Iterator[int]:
    """Submit one task per block and yield the number of samples each finished task wrote."""
    from dask.distributed import as_completed

    futures = [
        client.submit(
            explain_shard,
            factory,
            dataset,
            block,
            ids,
            explain_args,
            str(store),
            device,
            key=f"xai-bench-block-{block[0]}-{len(block)}",
            pure=False,
        )
        for block in blocks
    ]
    for future in as_completed(futures):
        yield future.result()
