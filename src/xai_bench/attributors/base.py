"""The ``Attributor`` interface every local method implements, built-in or plugin.

An attributor describes how one sample expands into images through the model (its
:class:`Cost`: IG's path points, occlusion's windows, DeepLIFT's input-and-reference pair) and
computes one pass at a time; the engine decides how many (sample, item) pairs go in a pass,
within the memory budget, and adds up the partial results. Attributors never batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core.checks import json_safe
from ..core.errors import PluginError


@dataclass(frozen=True)
class Cost:
    """How one sample expands into passes through the model, for the engine's planner."""

    #: length of the expansion axis: items per sample (IG steps, occlusion windows, ...)
    items: int = 1
    #: images one item puts through the model (DeepLIFT: an input and its reference)
    images: int = 1
    #: whether a pass runs backward (autograd keeps activations) or only forward
    backward: bool = True


@dataclass(frozen=True)
class Batch:
    """One pass: some (sample, item) pairs of the work, with the samples they belong to.

    ``inputs`` (n, C, H, W) are the distinct samples of the pass, ``targets`` (n, T) their class
    per target column and ``mask`` (n, T) which pairs to compute. ``sample`` (P,) and ``item``
    (P,) list the pass's pairs: the position in ``inputs`` and the index on the expansion axis.
    ``position`` (n,) is each sample's row in the call's inputs (for per-sample parameters) and
    ``key`` (n,) an integer derived from its sample id alone, the same in every call, block and
    worker (to seed per-sample random draws, so they do not depend on batching or resume).
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    sample: Tensor
    item: Tensor
    position: Tensor | None = None
    key: Tensor | None = None

    def columns(self) -> list[tuple[int, Tensor]]:
        """(column, rows) for each target column with at least one pair to compute."""
        return target_columns(self.mask)


@dataclass(frozen=True)
class Attribution:
    """What a pass returns for its samples.

    ``maps`` (n, T, C, H, W) and ``delta`` (n, T) are this pass's contributions, summed over its
    items (the engine adds the contributions of all passes, then calls :meth:`Attributor.finish`);
    with one item per sample they are the final values. ``outputs`` (n, K) are the logits of the
    inputs, for methods that declare ``reports_outputs`` (NaN rows where this pass did not compute them).
    ``second`` is a second sum of the maps' shape, added up like ``maps`` and handed to
    :meth:`Attributor.finish`, for methods that need two (a variance: the sum and the sum of squares).
    ``sums`` (n, ...) is any further per-sample sum of a shape the method chooses, the same in every
    pass, added up like ``maps`` and handed to :meth:`Attributor.finish` (the sufficient statistics of
    a regression over perturbed copies, the clean scores a later step divides by).
    """

    maps: Tensor
    delta: Tensor | None = None
    outputs: Tensor | None = None
    second: Tensor | None = None
    sums: Tensor | None = None


@dataclass(frozen=True)
class Prepared:
    """The model an attributor runs on, and what was rewritten to get it (for provenance)."""

    model: nn.Module
    surgery: tuple[str, ...] = ()
    #: the rewrite computes a composite (layer norm, softmax, attention) step by step, which rounds
    #: differently from its fused kernel: the check of the view against the model allows for that
    decomposed: bool = False
    #: the module whose output the maps attribute to (None: the input), as the user named it
    layer: str | None = None
    #: the maps' shape per (sample, target) when they are not of the input's shape: the layer's output
    #: per sample, (C', H', W'), (F,) or any rank; found by a probe forward pass
    map_shape: tuple[int, ...] | None = None


class Attributor(abc.ABC):
    """A local attribution method: maps of the inputs' shape (or of a layer's output, where
    :meth:`prepare` says so in :attr:`Prepared.map_shape`), one per (sample, target) pair.

    Subclasses set ``id`` and the capability flags, take their parameters as keyword-only
    ``__init__`` arguments (validated there), describe their expansion in :meth:`cost` and
    implement :meth:`attribute` for one pass (and :meth:`finish` when the summed contributions
    need a last step).
    """

    id: ClassVar[str]
    #: takes a reference input (``baseline``) that maps are measured against
    needs_baseline: ClassVar[bool] = False
    #: runs on a rewritten copy of the model (rule-based backward passes)
    needs_surgery: ClassVar[bool] = False
    #: maps are a multiplier times (input - baseline)
    multiplies_by_inputs: ClassVar[bool] = False
    #: also returns, per pair, ``sum(map) - (f(x) - f(baseline))``
    has_delta: ClassVar[bool] = False
    #: passes return the inputs' logits, which spares xai_bench a forward pass for the scores
    reports_outputs: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        """Return this instance's parameters, JSON-safe, for provenance."""
        return {k: json_safe(v) for k, v in vars(self).items() if not k.startswith("_")}

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        """Return how one sample of ``input_shape`` (C, H, W) expands; used to plan passes."""
        return Cost()

    def check_inputs(self, inputs: Tensor) -> None:
        """Refuse, before any pass, inputs (N, C, H, W) this instance cannot explain (e.g. per-sample
        parameters of another length); default: accept all."""
        return None

    def works_in_blocks(self) -> str | None:
        """None if ``run`` may explain a data set block by block with this instance, else why not
        (parameters tied to the rows of one call, such as per-sample baselines)."""
        return None

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        """Return the model to run on; rule-based methods return a rewritten view of it."""
        return Prepared(model)

    @abc.abstractmethod
    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        """Run one pass: return the contributions of ``batch``'s pairs for its ``inputs``."""

    def finish(self, inputs: Tensor, total: Attribution) -> Attribution:
        """Turn the summed contributions of every pass into maps (N, T, C, H, W); default: as they are."""
        return total


class OneTarget(Attributor):
    """Base for methods written for one target per sample (captum style); the columns run in turn.

    Implement :meth:`attribute_target`; targets that share a forward pass are out of reach
    here, which is fine for most plugins.
    """

    @abc.abstractmethod
    def attribute_target(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Attribution:
        """Return ``Attribution(maps)`` with maps (N, C, H, W) of ``inputs`` for classes ``target`` (N,)."""

    def attribute(self, model: nn.Module, batch: Batch) -> Attribution:
        """One pass: each target column's rows through :meth:`attribute_target`, gathered into the batch's pairs."""
        maps = zero_maps(batch.inputs, batch.targets.shape[1])
        delta = torch.zeros(batch.targets.shape, dtype=maps.dtype, device=maps.device) if self.has_delta else None
        for column, rows in batch.columns():
            x = batch.inputs[rows]
            result = self.attribute_target(model, x, batch.targets[rows, column])
            _check(self, result, (len(rows),), tuple(x.shape[1:]), "attribute_target()", partial=False)
            maps[rows, column] = result.maps.to(maps.dtype)
            if delta is not None:
                delta[rows, column] = result.delta.to(delta.dtype)
        return Attribution(maps, delta=delta)


def check_attribution(
    attributor: Attributor,
    part: object,
    batch: Batch,
    who: str | None = None,
    call: str = "attribute()",
    *,
    map_shape: tuple[int, ...] | None = None,
) -> Attribution:
    """Return ``part`` if it is what :meth:`Attributor.attribute` promises for ``batch``, else raise
    :class:`PluginError`: an :class:`Attribution` with maps (n, T, C, H, W) (or (n, T, *map_shape) for
    maps of a layer, :attr:`Prepared.map_shape`), a delta (n, T) where the method declares
    ``has_delta``, and (n, classes) outputs where it declares ``reports_outputs``.

    A pass's maps may have size 1 on an image axis their contribution is shared along (occlusion's
    channels), which :meth:`Attributor.finish` expands; ``call="finish()"`` checks the final maps
    exactly. Checked because the engine's sums and a map stored at the wrong size would otherwise
    broadcast without complaint.
    """
    partial = call != "finish()"
    image = tuple(map_shape) if map_shape is not None else tuple(batch.inputs.shape[1:])
    _check(attributor, part, tuple(batch.targets.shape), image, call, who, partial=partial)
    n = batch.targets.shape[0]
    outputs = part.outputs  # type: ignore[union-attr]
    logits = isinstance(outputs, Tensor) and outputs.dim() == 2 and len(outputs) == n
    if attributor.reports_outputs and call == "attribute()" and not logits:
        got = tuple(outputs.shape) if isinstance(outputs, Tensor) else outputs
        raise PluginError(
            f"{who or f'method {attributor.id!r}'} declares reports_outputs but returned outputs {got}; "
            f"expected ({n}, classes) logits (NaN rows where the pass did not compute them)."
        )
    return part


def _check(
    attributor: Attributor,
    part: object,
    lead: tuple[int, ...],
    image: tuple[int, ...],
    call: str,
    who: str | None = None,
    *,
    partial: bool,
) -> None:
    """Raise :class:`PluginError` unless ``part`` holds maps ``(*lead, *image)`` (size 1 allowed on
    the image axes if ``partial``) and, with ``has_delta``, a delta ``lead``."""
    name = who or f"method {attributor.id!r} ({type(attributor).__module__}.{type(attributor).__qualname__})"
    if not isinstance(part, Attribution):
        raise PluginError(
            f"{name}: {call} returned {type(part).__name__}; return an xai_bench.Attribution(maps, delta=..., "
            "outputs=...)."
        )
    sums = part.sums
    if sums is not None and (not isinstance(sums, Tensor) or sums.dim() < 1 or sums.shape[0] != lead[0]):
        got = tuple(sums.shape) if isinstance(sums, Tensor) else type(sums).__name__
        raise PluginError(f"{name}: {call} returned sums {got}; expected a tensor ({lead[0]}, ...), a row per sample.")
    for what, value, expected, required in (
        ("maps", part.maps, (*lead, *image), True),
        ("delta", part.delta, lead, attributor.has_delta),
        ("second", part.second, (*lead, *image), False),
    ):
        if not required and (value is None or what == "delta"):
            continue  # a delta the method does not declare is never used
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        if partial and what != "delta" and isinstance(got, tuple) and len(got) == len(expected):
            shared = [i >= len(lead) and g == 1 for i, g in enumerate(got)]  # shared along that image axis
            expected = tuple(1 if one else e for one, e in zip(shared, expected, strict=True))
        if got != expected:
            hint = " (the method declares has_delta)" if what == "delta" and value is None else ""
            raise PluginError(f"{name}: {call} returned {what} {got}{hint}; expected shape {expected}.")


#: For ``torch.autograd.grad``: an input a score does not depend on (a model whose output ignores it) has
#: a zero gradient, which is the map's answer, instead of torch's error.
UNUSED_IS_ZERO = {"allow_unused": True, "materialize_grads": True}


def zero_maps(inputs: Tensor, t: int, shape: tuple[int, ...] | None = None) -> Tensor:
    """Zero maps (N, T, C, H, W) to add contributions into; (N, T, *shape) for maps of another shape (a layer's)."""
    return inputs.new_zeros((inputs.shape[0], t, *(inputs.shape[1:] if shape is None else shape)))


def target_columns(mask: Tensor) -> list[tuple[int, Tensor]]:
    """(column, rows) for each target column with at least one pair to compute."""
    return [(c, mask[:, c].nonzero().flatten()) for c in range(mask.shape[1]) if mask[:, c].any()]
