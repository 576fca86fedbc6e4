"""Images prepared once for every stage: a cached tensor file per data set and size, resumable."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .datasets import Record
from .labels import Hierarchy
from .preprocess import prepare
from .splits import identifiers


@dataclass
class PreparedSet:
    """Every image of a study at one size, with what the stages need beside it."""

    images: torch.Tensor  # (N, 3, S, S) uint8: the [0, 1] images in 1/255 steps
    targets: torch.Tensor  # (N, L) float 0/1 of the model's outputs
    padding: torch.Tensor  # (N, S, S) bool: the zero-padded bands
    lesions: torch.Tensor | None  # (N, S, S) bool where known (synthetic data)
    sample_ids: list[str]
    subjects: list[str]
    sources: list[str]
    labels: list[list[str]]  # every label of an image, ancestors included
    outputs: tuple[str, ...]
    #: Days since the subject's first image, where the data says (None elsewhere): follow-up series.
    offsets: list[float | None] | None = None

    def float_images(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        chosen = self.images if rows is None else self.images[torch.as_tensor(list(rows), dtype=torch.long)]
        return chosen.float() / 255.0

    def rows_of(self, ids: Sequence[str]) -> list[int]:
        """The rows of the subjects or images ``ids`` names (see :func:`covid_cxr.splits.identifiers`)."""
        wanted = set(ids)
        return [i for i, (s, n) in enumerate(zip(self.subjects, self.sample_ids, strict=True))
                if wanted & identifiers(s, n)]  # fmt: skip


class ForRun(torch.utils.data.Dataset):
    """Rows of a :class:`PreparedSet` as the map-style data set ``xai_bench.run`` takes (image and id)."""

    def __init__(self, prepared: PreparedSet, rows: Sequence[int]) -> None:
        self.prepared, self.rows = prepared, list(rows)
        self.sample_ids = [prepared.sample_ids[i] for i in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, object]:
        row = self.rows[index]
        return {"image": self.prepared.images[row].float() / 255.0, "id": self.prepared.sample_ids[row]}


def prepare_set(
    records: Sequence[Record],
    size: int,
    cache: str | os.PathLike[str],
    *,
    lesions: Sequence[np.ndarray | None] | None = None,
    hierarchy: Hierarchy | None = None,
    progress: bool = True,
) -> PreparedSet:
    """Prepare every record at ``size`` (see :func:`covid_cxr.preprocess.prepare`), or load the cache
    made from the same files and size. ``lesions`` are masks at each image's source size, aligned
    with the images by the same geometry (nearest neighbour)."""
    hierarchy = hierarchy or Hierarchy.load()
    key = _key(records, size, lesions is not None, hierarchy.outputs)
    path = Path(cache)
    if path.exists():
        stored = torch.load(path, weights_only=True)
        if stored.get("key") == key:
            return _from_dict(stored)
    n = len(records)
    images = torch.zeros((n, 3, size, size), dtype=torch.uint8)
    padding = torch.zeros((n, size, size), dtype=torch.bool)
    lesion_masks = torch.zeros((n, size, size), dtype=torch.bool) if lesions is not None else None
    for i, record in enumerate(tqdm(records, desc=f"prepare {size} px", unit="image", disable=not progress)):
        done = prepare(record.path, size=size)
        images[i] = (done.image * 255).round().to(torch.uint8)
        padding[i] = done.padding
        if lesion_masks is not None and lesions[i] is not None:
            lesion_masks[i] = _mask_like(lesions[i], done.padding)
    prepared = PreparedSet(
        images=images,
        targets=torch.tensor([hierarchy.targets(r.labels) for r in records], dtype=torch.float32),
        padding=padding,
        lesions=lesion_masks,
        sample_ids=[r.sample_id for r in records],
        subjects=[r.subject for r in records],
        sources=[r.source for r in records],
        labels=[sorted(r.labels) for r in records],
        outputs=tuple(hierarchy.outputs),
        offsets=[r.offset for r in records],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save({"key": key, **_to_dict(prepared)}, partial)
    os.replace(partial, path)
    return prepared


def _mask_like(mask: np.ndarray, padding: torch.Tensor) -> torch.Tensor:
    """``mask`` (source size) resized by nearest neighbour into the unpadded part of ``padding``."""
    inside = (~padding).nonzero()
    top, left = (int(v) for v in inside.min(0).values)
    bottom, right = (int(v) + 1 for v in inside.max(0).values)
    source = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    resized = torch.nn.functional.interpolate(source, size=(bottom - top, right - left), mode="nearest")[0, 0] > 0.5
    out = torch.zeros_like(padding)
    out[top:bottom, left:right] = resized
    return out


def _key(records: Sequence[Record], size: int, with_lesions: bool, outputs: Sequence[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for r in records:
        stat = r.path.stat()
        digest.update(f"{r.path}|{stat.st_size}|{stat.st_mtime_ns}|{sorted(r.labels)}|{r.subject}|{r.offset}".encode())
    digest.update(json.dumps([size, with_lesions, list(outputs)]).encode())
    return digest.hexdigest()


def _to_dict(p: PreparedSet) -> dict:
    return {
        "images": p.images, "targets": p.targets, "padding": p.padding, "lesions": p.lesions,
        "sample_ids": p.sample_ids, "subjects": p.subjects, "sources": p.sources, "labels": p.labels,
        "outputs": list(p.outputs), "offsets": p.offsets,
    }  # fmt: skip


def _from_dict(d: dict) -> PreparedSet:
    return PreparedSet(
        images=d["images"], targets=d["targets"], padding=d["padding"], lesions=d["lesions"],
        sample_ids=list(d["sample_ids"]), subjects=list(d["subjects"]), sources=list(d["sources"]),
        labels=[list(x) for x in d["labels"]], outputs=tuple(d["outputs"]), offsets=d.get("offsets"),
    )  # fmt: skip
