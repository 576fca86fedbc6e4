"""Read a data set's samples and explain one block of them: the unit of work of ``run``, local or on a worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..api.explaining import explain_job
from ..api.items import read_item
from ..api.job import ExplainJob
from ..core.errors import InvalidInputError
from ..core.provenance import image_checksum
from ..storage.sample_store import INPUTS


def item_of(dataset: Any, index: int) -> tuple[Tensor, Any]:
    """Return (image (C, H, W), sample id or None) for one dataset item."""
    item = read_item(dataset[index], f"dataset item {index}")
    return item.image, item.id


def sample_ids_of(dataset: Any) -> list[Any]:
    """The data set's ``sample_ids``, or 0..len-1; unique also as text, since stores keep them as text."""
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise InvalidInputError(
            f"run() needs a data set (len() and indexing: a tensor, a list, a torch Dataset), got "
            f"{type(dataset).__name__}."
        )
    ids = getattr(dataset, "sample_ids", None)
    ids = list(ids) if ids is not None else list(range(len(dataset)))
    if len(ids) != len(dataset) or len({str(i) for i in ids}) != len(ids):
        raise InvalidInputError("dataset.sample_ids must hold one unique id per item (unique also as text).")
    return ids


def load(dataset: Any, indices: Sequence[int], ids: Sequence[Any], shape: Sequence[int] | None = None) -> Tensor:
    """Stack the images at ``indices``, checking each item's own id against ``ids`` and its shape
    against ``shape`` (C, H, W), or the first one's (a stacking error would name no sample)."""
    images: list[Tensor] = []
    for i in indices:
        image, found = item_of(dataset, int(i))
        if found is not None and str(found) != str(ids[i]):
            raise InvalidInputError(f"dataset item {i} has id {found!r} but dataset.sample_ids says {ids[i]!r}.")
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        expected = tuple(shape) if shape is not None else (tuple(images[0].shape) if images else None)
        if not isinstance(image, Tensor) or image.dim() != 3 or (expected is not None and got != expected):
            raise InvalidInputError(
                f"dataset sample {ids[i]!r} (item {i}) is an image of shape {got}, expected "
                f"{expected or '(C, H, W)'} (the first sample's); every image of a data set must have the "
                "same channels and size (resize, pad or expand them in the data set)."
            )
        images.append(image)
    return torch.stack(images)


def checksums(dataset: Any, indices: Sequence[int], ids: Sequence[Any]) -> list[int]:
    """The input checksum of each sample at ``indices``, as stored beside its maps."""
    return [image_checksum(image) for image in load(dataset, indices, ids)]


def explain_block(
    net: nn.Module, dataset: Any, block: Sequence[int], ids: Sequence[Any], job: ExplainJob, device: Any
) -> xr.Dataset:
    """Explain the samples at ``block`` (per-sample targets are cut to the block), with their input checksums."""
    x = load(dataset, block, ids, job.image_shape)
    sums = [image_checksum(image) for image in x]
    if device is not None:
        x = x.to(device)
    ds = explain_job(net, x, job.for_block(block), [ids[i] for i in block])
    return ds.assign({INPUTS: ("sample", np.asarray(sums, dtype=np.int64))})
