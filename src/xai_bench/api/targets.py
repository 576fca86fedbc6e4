"""Resolve the ``targets`` argument into per-sample class indices, in the dense or the slot layout.

The rule, decided from the argument alone (never from the data, so that blocks, workers and
resumes agree before any prediction exists):

- the same classes for every sample, stored densely as (sample, target, ...): an int, a label
  name, a plain list or tuple of them, or ``"all"``;
- classes per sample, stored in slots as (sample, slot, ...): a 1-D integer tensor or array of
  length N (captum's ``target=y``: one class per sample), a list of per-sample lists, an (N, C)
  boolean mask, or ``"predicted"``. The slot width is the longest row (``max_targets`` when given);
  ``"predicted"`` has one slot for ``task="multiclass"`` and ``max_targets`` (default: every class)
  for ``"multilabel"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..core.checks import json_safe, to_json
from ..core.errors import InvalidTargetError, did_you_mean, warn
from ..storage.datasets import UNUSED, TargetTable
from .outputs import check_output

Task = Literal["multiclass", "multilabel"]
#: a multilabel ``"predicted"`` with more slots than this (and no ``max_targets``) gets a warning
LARGE_SLOT_WIDTH = 32

_SCALARS = (int, np.integer, str)


@dataclass(frozen=True)
class Resolved:
    """The targets of one call: per-sample class indices (``table``) and which pairs to compute."""

    table: TargetTable
    mask: Tensor  # (N, S) bool: True where a map is computed

    @property
    def index(self) -> Tensor:
        """(N, S) class indices with unused slots set to 0, ready to index logits."""
        return torch.as_tensor(self.table.index).clamp(min=0)


def check_labels(labels: Sequence[str] | None, num_classes: int) -> list[str] | None:
    if labels is None:
        return None
    labels = list(labels)
    if len(labels) != num_classes:
        raise InvalidTargetError(f"class_names has {len(labels)} names but the model has {num_classes} outputs.")
    if len(set(labels)) != len(labels) or not all(isinstance(name, str) for name in labels):
        raise InvalidTargetError("class_names must be unique strings, one per model output.")
    return labels


def check_task(task: object) -> None:
    if task not in ("multiclass", "multilabel"):
        raise InvalidTargetError(f"task must be 'multiclass' or 'multilabel', got {task!r}.")


def check_threshold(threshold: object) -> float:
    """``threshold`` as a float if a sigmoid can exceed it and it is a probability (0 <= t < 1), else raise."""
    real = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, (bool, np.bool_))
    if not real:
        raise InvalidTargetError(
            f"threshold must be a number, got {threshold!r} ({type(threshold).__name__}); e.g. threshold=0.5."
        )
    value = float(threshold)  # type: ignore[arg-type]
    if not 0 <= value < 1:  # also refuses NaN
        raise InvalidTargetError(
            f"threshold must be a probability in [0, 1) (a label is predicted where its sigmoid exceeds it), "
            f"got {threshold!r}. The default is 0.5."
        )
    return value


def _is_scalar(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, _SCALARS):
        return True
    return isinstance(value, (Tensor, np.ndarray)) and value.ndim == 0 and not _floating(value)


def _floating(value: Tensor | np.ndarray) -> bool:
    return value.is_floating_point() if isinstance(value, Tensor) else value.dtype.kind in "fc"


def _is_row(value: object) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, (Tensor, np.ndarray)) and value.ndim == 1)


def form(targets: object) -> Literal["all", "predicted", "dense", "rows", "mask"]:
    """Classify ``targets`` by the rule in this module's docstring; raise if it fits none."""
    if isinstance(targets, str) and targets in ("all", "predicted"):
        return targets  # type: ignore[return-value]
    if _is_scalar(targets):
        return "dense"
    if isinstance(targets, (Tensor, np.ndarray)):
        if targets.dtype in (torch.bool, np.bool_):
            if targets.ndim == 2:
                return "mask"
            raise InvalidTargetError(f"a boolean targets mask must be (N, classes), got shape {tuple(targets.shape)}.")
        if _floating(targets):
            raise InvalidTargetError(
                f"targets must hold class indices (integers) or be a boolean (N, classes) mask, got {targets.dtype}."
            )
        if targets.ndim == 1:
            return "rows"  # one class per sample, as captum's target=y
        raise InvalidTargetError(
            f"integer targets must be 1-D (one class per sample), got shape {tuple(targets.shape)}; "
            "for several classes per sample pass a list of lists or a boolean (N, classes) mask."
        )
    if isinstance(targets, (list, tuple)):
        if not targets:
            raise InvalidTargetError("targets is empty; pass at least one class, 'all' or 'predicted'.")
        if all(_is_scalar(t) for t in targets):
            return "dense"
        if all(_is_row(t) for t in targets):
            return "rows"
    raise InvalidTargetError(
        f"targets {_short(targets)} fits no accepted form: an int or label name, a list of them (the same for "
        "every sample), 'all', 'predicted', a 1-D integer tensor of one class per sample, a list of per-sample "
        "lists, or a boolean (N, classes) mask."
    )


def per_sample(targets: object) -> bool:
    """True when ``targets`` gives classes per sample (stored in slots)."""
    return form(targets) in ("predicted", "rows", "mask")


def take_samples(targets: object, indices: Sequence[int]) -> object:
    """The part of per-sample ``targets`` for the samples at ``indices`` (others are returned as they are)."""
    kind = form(targets)
    if kind == "rows" and isinstance(targets, (list, tuple)):
        return [targets[i] for i in indices]
    if kind in ("rows", "mask"):
        return targets[torch.as_tensor(list(indices))] if isinstance(targets, Tensor) else targets[list(indices)]
    return targets


def row_width(targets: object) -> int | None:
    """The longest per-sample row of explicit per-sample ``targets`` (None for the other forms)."""
    kind = form(targets)
    if kind == "mask":
        return int(torch.as_tensor(targets).sum(1).max()) if len(targets) else 0
    if kind == "rows":
        return max((1 if _is_scalar(r) else len(r) for r in targets), default=0)
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _one(target: object, labels: list[str] | None, num_classes: int) -> int:
    if isinstance(target, str):
        if labels is None:
            raise InvalidTargetError(
                f"target {target!r} is a class name but no names were given: Targets(..., class_names=[...])."
            )
        if target not in labels:
            shown = ", ".join(map(repr, labels[:10])) + (f", ... ({len(labels)} in all)" if len(labels) > 10 else "")
            raise InvalidTargetError(f"unknown label {target!r}.{did_you_mean(target, labels)} Labels: {shown}.")
        return labels.index(target)
    if isinstance(target, (Tensor, np.ndarray)):
        target = target.item()
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise InvalidTargetError(f"targets must be ints or label names, got {target!r}.")
    if not 0 <= target < num_classes:
        raise InvalidTargetError(
            f"target {target} is out of range: the model has {num_classes} outputs (0..{num_classes - 1})."
        )
    return int(target)


def _row(items: Any, labels: list[str] | None, k: int, sample: int) -> list[int]:
    values = [items] if _is_scalar(items) else list(items.tolist() if hasattr(items, "tolist") else items)
    row = [_one(t, labels, k) for t in values]
    if len(set(row)) != len(row):
        raise InvalidTargetError(f"the targets of sample {sample} name the same class twice: {values!r}.")
    return row


def slot_width(targets: object, task: Task, num_classes: int, max_targets: int | None) -> int:
    """Slots per sample of per-sample ``targets``, decided from the arguments only."""
    if isinstance(targets, str) and targets == "predicted":
        if task == "multiclass":
            return 1  # one arg-max per sample, whatever max_targets says
        return max_targets or num_classes
    if max_targets is not None:
        return max_targets
    return max(1, row_width(targets) or 0)


def resolve_targets(
    targets: object,
    scores: Tensor | None,
    *,
    n: int,
    num_classes: int,
    labels: list[str] | None,
    task: Task,
    threshold: float,
    max_targets: int | None = None,
    output: str = "logit",
) -> Resolved:
    """Turn the user's ``targets`` into a :class:`Resolved` for ``n`` samples.

    ``scores`` (N, K), the explained ``output`` (logits, or their sigmoid or softmax), are needed
    for ``"predicted"`` only.
    """
    check_task(task)
    kind = form(targets)
    k = num_classes
    if kind == "all":
        return _dense(list(range(k)), n, labels)
    if kind == "dense":
        items = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        indices = [_one(t, labels, k) for t in items]
        if len(set(indices)) != len(indices):
            raise InvalidTargetError(f"targets {items!r} name the same class twice.")
        return _dense(indices, n, labels)
    width = slot_width(targets, task, k, max_targets)
    if kind == "predicted":
        assert scores is not None, "'predicted' targets need the model's scores"
        rows = _predicted(scores, task, threshold, width, probabilities=output == "sigmoid")
    elif kind == "mask":
        mask = torch.as_tensor(np.asarray(targets) if isinstance(targets, np.ndarray) else targets)
        if mask.shape != (n, k):
            raise InvalidTargetError(
                f"a targets mask must be (N, classes) = ({n}, {k}), got shape {tuple(mask.shape)}."
            )
        rows = [m.nonzero().flatten().tolist() for m in mask.cpu()]
    else:
        if len(targets) != n:
            raise InvalidTargetError(
                f"per-sample targets hold {len(targets)} entries for {n} inputs. A 1-D tensor (or a list of lists) "
                "gives each sample its own classes; for the same classes for every sample pass a plain list, "
                "e.g. targets=[0, 3]."
            )
        rows = [_row(r, labels, k, i) for i, r in enumerate(targets)]
    longest = max((len(r) for r in rows), default=0)
    if longest > width:
        raise InvalidTargetError(
            f"a sample has {longest} targets but max_targets is {width}; raise max_targets or pass fewer targets."
        )
    index = np.full((n, width), UNUSED, dtype=np.int64)
    for i, row in enumerate(rows):
        index[i, : len(row)] = row
    table = TargetTable("slot", index, labels)
    return Resolved(table, torch.as_tensor(table.used))


def _dense(indices: list[int], n: int, labels: list[str] | None) -> Resolved:
    index = np.tile(np.asarray(indices, dtype=np.int64), (n, 1))
    return Resolved(TargetTable("dense", index, labels), torch.ones(n, len(indices), dtype=torch.bool))


def _predicted(scores: Tensor, task: Task, threshold: float, width: int, *, probabilities: bool) -> list[list[int]]:
    scores = scores.detach().double().cpu()
    # A multilabel "predicted" is the same set of labels whichever output is explained.
    above_threshold = scores > threshold if probabilities else torch.sigmoid(scores) > threshold
    if task == "multiclass":
        return [[int(c)] for c in scores.argmax(1)]
    rows, dropped = [], 0
    for row, hits in zip(scores, above_threshold, strict=True):
        above = hits.nonzero().flatten()
        ranked = above[torch.argsort(row[above], descending=True, stable=True)].tolist()
        dropped += max(0, len(ranked) - width)
        rows.append(sorted(ranked[:width]))
    if dropped:
        warn(
            f"{dropped} predicted labels beyond max_targets={width} per sample were left out (the lowest-scoring); "
            "raise max_targets to keep them.",
        )
    return rows


def check_max_targets(max_targets: object) -> int | None:
    if max_targets is None:
        return None
    if isinstance(max_targets, bool) or not isinstance(max_targets, (int, np.integer)) or max_targets < 1:
        raise InvalidTargetError(f"max_targets must be a positive int or None, got {max_targets!r}.")
    return int(max_targets)


def warn_wide(targets: object, task: Task, width: int, max_targets: int | None) -> None:
    """Warn when ``"predicted"`` multilabel targets get a slot per class by default on a large model."""
    wide = width > LARGE_SLOT_WIDTH and max_targets is None
    if wide and isinstance(targets, str) and targets == "predicted" and task == "multilabel":
        warn(
            f"targets='predicted' with task='multilabel' keeps a slot for each of the {width} classes per "
            "sample; pass Targets(..., max_targets=...) to store fewer.",
        )


@dataclass(frozen=True, eq=False)
class Targets:
    """Which outputs of the model a call explains, and how "predicted" is read.

    ``classes`` is any form of the rule in this module's docstring: the same classes for every
    sample (an int, a label name, a list of them, ``"all"``) or classes per sample (a 1-D integer
    tensor as captum's ``target=y``, a list of per-sample lists, an (N, classes) boolean mask, or
    ``"predicted"``). ``class_names`` names the model's outputs (labels in stores, names in
    ``classes``). ``"predicted"`` is the arg-max for ``task="multiclass"`` and every label whose
    sigmoid exceeds ``threshold`` for ``"multilabel"``, ``max_targets`` slots at most. ``output``
    is what the maps explain: the logits, or their ``"sigmoid"`` or ``"softmax"``, as if the model
    ended in that module (the model is not changed); ``"predicted"`` picks the same classes either
    way. Every field is checked when the object is made. Where a call takes ``targets=``, any
    plain form of ``classes`` stands for ``Targets(classes)``.
    """

    classes: object = "predicted"
    class_names: Sequence[str] | None = None
    task: Task = "multiclass"
    threshold: float = 0.5
    max_targets: int | None = None
    output: str = "logit"

    def __post_init__(self) -> None:
        form(self.classes)
        check_task(self.task)
        object.__setattr__(self, "threshold", check_threshold(self.threshold))
        object.__setattr__(self, "max_targets", check_max_targets(self.max_targets))
        object.__setattr__(self, "output", check_output(self.output, self.task))
        if self.class_names is not None:
            names = list(self.class_names)
            if len(set(names)) != len(names) or not all(isinstance(name, str) for name in names):
                raise InvalidTargetError("class_names must be unique strings, one per model output.")
            object.__setattr__(self, "class_names", tuple(names))

    @classmethod
    def of(cls, value: object) -> Targets:
        """``value`` itself if it is :class:`Targets`, else ``Targets(value)``."""
        return value if isinstance(value, Targets) else cls(value)

    @property
    def per_sample(self) -> bool:
        """True when the classes differ per sample (stored in slots)."""
        return per_sample(self.classes)

    @property
    def names(self) -> list[str] | None:
        """``class_names`` as a list, or None."""
        return list(self.class_names) if self.class_names is not None else None

    def replace(self, **changes: Any) -> Targets:
        """A copy with ``changes`` (checked again)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return Targets(**{**fields, **changes})

    def for_samples(self, n: int) -> Targets:
        """These targets for a data set of ``n`` samples explained in parts: explicit per-sample classes must
        cover it, and fix the slot width, so that every part has the same one."""
        if not self.per_sample or isinstance(self.classes, str):
            return self
        if len(self.classes) != n:  # type: ignore[arg-type]
            raise InvalidTargetError(f"per-sample targets hold {len(self.classes)} entries for {n} samples.")  # type: ignore[arg-type]
        return self.replace(max_targets=self.max_targets or max(1, row_width(self.classes) or 0))

    def take(self, indices: Sequence[int]) -> Targets:
        """The targets of the samples at ``indices`` (per-sample classes cut to them)."""
        return self.replace(classes=take_samples(self.classes, indices))

    def slot_width(self, num_classes: int) -> int:
        """Slots per sample of per-sample classes on a model of ``num_classes`` outputs (from the arguments only)."""
        return slot_width(self.classes, self.task, num_classes, self.max_targets)

    def resolve(self, scores: Tensor | None, *, n: int, num_classes: int) -> Resolved:
        """The classes of ``n`` samples; ``scores`` (N, K) of the explained output for ``"predicted"``."""
        return resolve_targets(
            self.classes, scores, n=n, num_classes=num_classes, labels=check_labels(self.names, num_classes),
            task=self.task, threshold=self.threshold, max_targets=self.max_targets, output=self.output,
        )  # fmt: skip

    def options(self) -> dict[str, Any]:
        """What makes two runs' targets the same, as JSON-safe values (a run's store is keyed on them).

        The names of the keys are those stores were first keyed on (``labels`` for the class names),
        and ``output`` is left out for logits: stores written before it existed resume as they were.
        """
        options = {
            "targets": json_safe(_listed(self.classes)),
            "labels": self.names,
            "task": self.task,
            "threshold": self.threshold,
            "max_targets": self.max_targets,
        }
        if self.output != "logit":
            options["output"] = self.output
        return options

    def describe(self, resolved: Resolved) -> str:
        """``classes`` for provenance: the keyword, the shared classes, or where the per-sample ones are."""
        if isinstance(self.classes, str):
            return self.classes
        if resolved.table.layout == "dense":
            return to_json(resolved.table.index[0].tolist())
        return "per-sample: see the target_index coordinate"


def _listed(targets: object) -> object:
    if isinstance(targets, (Tensor, np.ndarray)):
        return targets.tolist()
    if isinstance(targets, (list, tuple)):
        return [_listed(t) for t in targets]
    return targets
