"""Resolve the ``targets`` argument into class indices and which (sample, target) pairs to compute."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .errors import InvalidTargetError, close_matches

Task = Literal["multiclass", "multilabel"]


@dataclass(frozen=True)
class Targets:
    """Class indices along the ``target`` dimension, their labels, and the pairs to compute."""

    indices: list[int]
    coords: list[int] | list[str]
    mask: Tensor  # (N, T) bool: True where a map is computed


def check_labels(labels: Sequence[str] | None, num_classes: int) -> list[str] | None:
    if labels is None:
        return None
    labels = list(labels)
    if len(labels) != num_classes:
        raise InvalidTargetError(f"labels has {len(labels)} names but the model has {num_classes} outputs.")
    if len(set(labels)) != len(labels) or not all(isinstance(name, str) for name in labels):
        raise InvalidTargetError("labels must be unique strings, one per model output.")
    return labels


def _one(target: object, labels: list[str] | None, num_classes: int) -> int:
    if isinstance(target, str):
        if labels is None:
            raise InvalidTargetError(f"target {target!r} is a label name but no labels=[...] were given.")
        if target not in labels:
            hint = close_matches(target, labels)
            extra = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
            raise InvalidTargetError(f"unknown label {target!r}.{extra} Labels: {', '.join(map(repr, labels))}.")
        return labels.index(target)
    if isinstance(target, bool) or not isinstance(target, int):
        if isinstance(target, Tensor) and target.dim() == 0 and not target.is_floating_point():
            target = int(target)
        else:
            raise InvalidTargetError(f"targets must be ints, label names, 'all' or 'predicted'; got {target!r}.")
    if not 0 <= target < num_classes:
        raise InvalidTargetError(
            f"target {target} is out of range: the model has {num_classes} outputs (0..{num_classes - 1})."
        )
    return int(target)


def resolve_targets(
    targets: object,
    scores: Tensor,
    *,
    labels: list[str] | None,
    task: Task,
    threshold: float,
) -> Targets:
    """Turn the user's ``targets`` into a :class:`Targets` for logits ``scores`` (N, K)."""
    n, k = scores.shape
    if task not in ("multiclass", "multilabel"):
        raise InvalidTargetError(f"task must be 'multiclass' or 'multilabel', got {task!r}.")
    if isinstance(targets, str) and targets in ("all", "predicted"):
        indices = list(range(k))
        if targets == "all":
            mask = torch.ones(n, k, dtype=torch.bool)
        elif task == "multilabel":
            mask = (torch.sigmoid(scores.double()) > threshold).cpu()
        else:
            mask = torch.zeros(n, k, dtype=torch.bool)
            mask[torch.arange(n), scores.argmax(1).cpu()] = True
    else:
        if isinstance(targets, Tensor):
            targets = targets.flatten().tolist()
        items = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        if not items:
            raise InvalidTargetError("targets is empty; pass at least one class, 'all' or 'predicted'.")
        indices = [_one(t, labels, k) for t in items]
        if len(set(indices)) != len(indices):
            raise InvalidTargetError(f"targets {items!r} name the same class twice.")
        mask = torch.ones(n, len(indices), dtype=torch.bool)
    coords: list[int] | list[str] = [labels[i] for i in indices] if labels else indices
    return Targets(indices, coords, mask)
