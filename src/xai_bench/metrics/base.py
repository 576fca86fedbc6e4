"""The ``Metric`` interface every map score implements, built-in or plugin."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.checks import json_safe


@dataclass(frozen=True)
class Pairs:
    """One method's maps, one row per (sample, target) pair that has a map.

    ``maps`` (P, C, H, W); ``sample`` (P,) the pair's row in the call's inputs; ``target`` (P,)
    its class index; ``masks`` (P, H, W) booleans where masks were given; ``delta`` (P,) where
    the method reports a completeness delta; ``method`` and ``params`` say how the maps were made
    (from the Dataset's provenance), for metrics that make them again.
    """

    maps: Tensor
    sample: Tensor
    target: Tensor
    method: str
    params: dict[str, Any]
    masks: Tensor | None = None
    delta: Tensor | None = None

    def reduced(self) -> Tensor:
        """The maps summed over channels, (P, H, W), in float64."""
        return self.maps.to(torch.float64).sum(1)


@dataclass
class Context:
    """What a metric may call: the inputs, the model and the engine's batched, budgeted passes.

    ``forward(total, images, name)`` runs the model on ``total`` images built on demand by
    ``images(first, count)`` (so a pass never holds more than the memory budget allows) and returns
    their logits (total, K). ``explain(model, sample, target)`` makes the pairs' method's maps
    again (``sample`` and ``target`` are the pairs' own), on ``model`` (a private copy; never the
    user's), of the output the stored maps explain (the logits, or their sigmoid or softmax).
    ``explain(model, sample, target, inputs)`` makes them of other images instead, ``inputs``
    (k, C, H, W) such as perturbed copies, one target per row: row ``i`` for class ``target[i]``,
    standing for row ``sample[i]`` of the call's inputs (whose key seeds a method's random draws).
    Both return maps (k, C, H, W) on the CPU. ``keys`` (N,) are the samples' keys (from their ids
    alone), to seed a metric's own random draws so that a score does not depend on which other
    samples share the call.
    """

    inputs: Tensor | None
    model: nn.Module | None
    forward: Callable[[int, Callable[[int, int], Tensor], str], Tensor]
    explain: Callable[..., Tensor]
    task: str = "multiclass"
    progress: bool | str = False  # as Passes.progress: True, False or "auto"
    keys: Tensor | None = None
    #: the score the maps explain: "logit", "sigmoid" or "softmax" (from the maps' provenance)
    output: str = "logit"


@dataclass(frozen=True)
class Curve:
    """Values along a named axis per pair: ``values`` (P, L) at ``coords`` (L,)."""

    values: Tensor
    dim: str
    coords: Sequence[Any]


@dataclass(frozen=True)
class Score:
    """A metric's result for one method: a value per pair, and optional curves or further values.

    ``value`` (P,) or a :class:`Curve`; ``extra`` maps a suffix to another (P,) value or Curve,
    stored as ``<method>_<metric>_<suffix>``.
    """

    value: Tensor | Curve
    extra: dict[str, Tensor | Curve] = field(default_factory=dict)


class Metric(abc.ABC):
    """A score of maps. Subclasses set ``id`` and the flags, take parameters as keyword-only
    ``__init__`` arguments (checked there) and implement :meth:`score`."""

    id: ClassVar[str]
    #: whether a higher value means a better map
    higher_is_better: ClassVar[bool] = True
    #: needs ground-truth masks (localisation)
    needs_masks: ClassVar[bool] = False
    #: needs the model and the inputs (perturbation, randomisation)
    needs_model: ClassVar[bool] = False
    #: takes a replacement for removed input (a value, a blur, the mean)
    needs_replacement: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        """Return this instance's parameters, JSON-safe, for provenance."""
        return {k: json_safe(v) for k, v in vars(self).items() if not k.startswith("_")}

    def applies_to(self, pairs: Pairs) -> str | None:
        """None if the metric can score ``pairs``, else why not (the method is then skipped, and said so)."""
        return None

    @abc.abstractmethod
    def score(self, pairs: Pairs, context: Context) -> Score:
        """Score every pair of one method."""
