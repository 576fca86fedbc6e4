"""The ``Attributor`` interface every local method implements, built-in or plugin."""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import InvalidParameterError


@dataclass(frozen=True)
class Cost:
    """Forward and backward passes one (sample, target) item costs, in images through the model."""

    forward: float
    backward: float = 0.0
    #: the fewest images one pass can hold (DeepLIFT: an input and its reference)
    unit: int = 1


@dataclass(frozen=True)
class Attribution:
    """What :meth:`Attributor.attribute` may return instead of a bare tensor of maps."""

    maps: Tensor  # (N, C, H, W)
    delta: Tensor | None = None  # (N,) completeness delta
    outputs: Tensor | None = None  # (N, K) logits of the inputs, when the method computed them anyway


@dataclass(frozen=True)
class Prepared:
    """The model an attributor runs on, and what was rewritten to get it (for provenance)."""

    model: nn.Module
    surgery: tuple[str, ...] = ()


class Attributor(abc.ABC):
    """A local attribution method: maps of the inputs' shape, one per (sample, target) item.

    Subclasses set ``id`` and the capability flags, take their parameters as keyword-only
    ``__init__`` arguments (validated there), and implement :meth:`attribute`.
    """

    id: ClassVar[str]
    #: takes a reference input (``baseline``) that maps are measured against
    needs_baseline: ClassVar[bool] = False
    #: runs on a rewritten copy of the model (rule-based backward passes)
    needs_surgery: ClassVar[bool] = False
    #: maps are a multiplier times (input - baseline)
    multiplies_by_inputs: ClassVar[bool] = False
    #: also returns, per item, ``sum(map) - (f(x) - f(baseline))``
    has_delta: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        """Return this instance's parameters, JSON-safe, for provenance."""
        return {k: json_safe(v) for k, v in vars(self).items() if not k.startswith("_")}

    def cost(self, input_shape: tuple[int, ...]) -> Cost:
        """Return the passes one item costs at ``input_shape`` (C, H, W); used to size batches."""
        return Cost(forward=1, backward=1)

    def prepare(self, model: nn.Module, example: Tensor) -> Prepared:
        """Return the model to run on; rule-based methods return a rewritten view of it."""
        return Prepared(model)

    @abc.abstractmethod
    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None
    ) -> Tensor | tuple[Tensor, Tensor] | Attribution:
        """Return maps of ``inputs``' shape (N, C, H, W) for ``target`` (N,) class indices.

        ``batch_size`` caps the images per forward pass where the method expands each input
        (steps, windows); ``None`` means no cap. Methods with ``has_delta`` return ``(maps, delta)``
        with ``delta`` of shape (N,), or an :class:`Attribution`, which can also carry the logits
        of ``inputs`` when the method computed them anyway (saves xai_bench a forward pass).
        """

    def attribute_many(
        self, model: nn.Module, inputs: Tensor, targets: Tensor, mask: Tensor, *, batch_size: int | None = None
    ) -> Attribution:
        """Return maps (N, T, C, H, W) for every pair where ``mask`` (N, T) is set, NaN elsewhere.

        ``targets`` (N, T) holds class indices. The default calls :meth:`attribute` once per
        target column; built-in methods override it to share forward passes between targets.
        """
        n, t = targets.shape
        maps = empty_maps(inputs, t)
        delta = torch.full((n, t), float("nan"), dtype=inputs.dtype, device=inputs.device) if self.has_delta else None
        outputs = None
        for column, rows in target_columns(mask):
            x = inputs[rows]
            result = as_attribution(self.id, self.attribute(model, x, targets[rows, column], batch_size=batch_size), x)
            maps[rows, column] = result.maps.to(maps.dtype)
            if delta is not None and result.delta is not None:
                delta[rows, column] = result.delta.to(delta.dtype)
            if result.outputs is not None:
                if outputs is None:
                    outputs = torch.full(
                        (n, result.outputs.shape[1]), float("nan"), dtype=inputs.dtype, device=inputs.device
                    )
                outputs[rows] = result.outputs.to(outputs.dtype)
        if outputs is not None and torch.isnan(outputs).any():
            outputs = None  # some samples had no target: their logits are not known here
        return Attribution(maps, delta=delta, outputs=outputs)


class SharesTargets(Attributor):
    """Base for methods whose core is :meth:`attribute_many`; :meth:`attribute` is its one-target case."""

    def attribute(
        self, model: nn.Module, inputs: Tensor, target: Tensor, *, batch_size: int | None = None
    ) -> Attribution:
        mask = torch.ones(len(target), 1, dtype=torch.bool, device=target.device)
        many = self.attribute_many(model, inputs, target.view(-1, 1), mask, batch_size=batch_size)
        return Attribution(many.maps[:, 0], None if many.delta is None else many.delta[:, 0], many.outputs)

    @abc.abstractmethod
    def attribute_many(
        self, model: nn.Module, inputs: Tensor, targets: Tensor, mask: Tensor, *, batch_size: int | None = None
    ) -> Attribution: ...


def as_attribution(method_id: str, out: object, inputs: Tensor) -> Attribution:
    """Normalise what :meth:`Attributor.attribute` returned, checking the maps' shape."""
    from ..errors import PluginError

    if isinstance(out, Attribution):
        result = out
    elif isinstance(out, tuple) and len(out) == 2:
        result = Attribution(out[0], delta=out[1])
    else:
        result = Attribution(out)  # type: ignore[arg-type]
    if not isinstance(result.maps, Tensor) or result.maps.shape != inputs.shape:
        got = tuple(result.maps.shape) if isinstance(result.maps, Tensor) else type(result.maps).__name__
        raise PluginError(f"method {method_id!r} returned maps of shape {got}, expected {tuple(inputs.shape)}.")
    return result


def empty_maps(inputs: Tensor, t: int) -> Tensor:
    """NaN maps (N, T, C, H, W) to fill pair by pair."""
    return torch.full((inputs.shape[0], t, *inputs.shape[1:]), float("nan"), dtype=inputs.dtype, device=inputs.device)


def target_columns(mask: Tensor) -> list[tuple[int, Tensor]]:
    """(column, rows) for each target column with at least one pair to compute."""
    return [(c, mask[:, c].nonzero().flatten()) for c in range(mask.shape[1]) if mask[:, c].any()]


def json_safe(value: Any) -> Any:
    """Turn parameter values into something JSON can hold."""
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return float(value.item())
        return f"tensor(shape={list(value.shape)}, dtype={value.dtype})"
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    return repr(value)


def check_positive_int(method: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(f"{method}: {name} must be a positive int, got {value!r}.")
    return value


def check_pair(method: str, name: str, value: Any) -> tuple[int, int]:
    """Accept an int or an (h, w) pair of positive ints."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise InvalidParameterError(
            f"{method}: {name} must be a positive int or a pair (height, width) of them, got {value!r}."
        )
    return int(pair[0]), int(pair[1])


def check_baseline(method: str, value: Any) -> float | Tensor:
    """Accept a finite number or a finite tensor broadcastable to one input (C, H, W)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidParameterError(f"{method}: baseline must be finite, got {value!r}.")
        return float(value)
    if isinstance(value, Tensor):
        if not torch.isfinite(value).all():
            raise InvalidParameterError(f"{method}: baseline tensor has NaN or Inf values.")
        if value.dim() == 4 and value.shape[0] != 1:
            raise InvalidParameterError(
                f"{method}: a baseline tensor is one reference image, shape (C, H, W) or (1, C, H, W); "
                f"got {tuple(value.shape)}."
            )
        return value.detach()
    raise InvalidParameterError(
        f"{method}: baseline must be a number or a tensor of shape (C, H, W), got {type(value).__name__}."
    )


def baseline_like(method: str, baseline: float | Tensor, inputs: Tensor) -> Tensor:
    """Broadcast a validated baseline to ``inputs``' shape, device and dtype."""
    if isinstance(baseline, float):
        return torch.full_like(inputs, baseline)
    ref = baseline.to(device=inputs.device, dtype=inputs.dtype)
    if ref.dim() == 3:
        ref = ref.unsqueeze(0)
    try:
        return ref.expand_as(inputs).contiguous()
    except RuntimeError:
        raise InvalidParameterError(
            f"{method}: baseline of shape {tuple(baseline.shape)} does not broadcast to inputs of "
            f"shape {tuple(inputs.shape[1:])} per sample."
        ) from None
