"""Parameter checks shared by the built-in methods (plugins may use them too)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..core.errors import InvalidParameterError


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


def check_baseline_set(method: str, baselines: Any, baseline: Any) -> Tensor | None:
    """Accept ``baselines``: a finite (B, C, H, W) tensor of reference images whose attributions are averaged.

    It is its own keyword so that one reference image (``baseline``) and a set of them cannot be
    confused; giving both is an error.
    """
    if baselines is None:
        return None
    if not _is_default(baseline):
        raise InvalidParameterError(
            f"{method}: pass either baseline= (one reference) or baselines= (a set averaged over), not both."
        )
    return _image_stack(method, "baselines", baselines, "a tensor of reference images, shape (B, C, H, W)")


def check_sample_baselines(method: str, sample_baselines: Any, baseline: Any, baselines: Any) -> Tensor | None:
    """Accept ``sample_baselines``: a finite (N, C, H, W) tensor, one reference image per input sample.

    Its own keyword, like ``baselines``: one reference for all, one per sample and a set averaged
    over cannot be mistaken for one another; giving more than one is an error.
    """
    if sample_baselines is None:
        return None
    if baselines is not None or not _is_default(baseline):
        raise InvalidParameterError(
            f"{method}: pass one of baseline= (one reference), sample_baselines= (one per sample) and "
            "baselines= (a set averaged over)."
        )
    return _image_stack(
        method, "sample_baselines", sample_baselines, "a tensor with one reference per input, shape (N, C, H, W)"
    )


def _is_default(baseline: Any) -> bool:
    """Whether ``baseline`` is still its default, 0: a set or per-sample references may then take its place."""
    return isinstance(baseline, (int, float)) and not isinstance(baseline, bool) and baseline == 0.0


def _image_stack(method: str, name: str, value: Any, expected: str) -> Tensor:
    """A finite (K, C, H, W) tensor of reference images, detached; else an error saying what ``name`` must be."""
    if not isinstance(value, Tensor) or value.dim() != 4 or value.shape[0] < 1:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InvalidParameterError(f"{method}: {name} must be {expected}, got {got}.")
    if not torch.isfinite(value).all():
        raise InvalidParameterError(f"{method}: {name} hold NaN or Inf values.")
    return value.detach()


def check_sample_baselines_fit(method: str, sample_baselines: Tensor | None, inputs: Tensor) -> None:
    """Refuse per-sample baselines whose count or image shape differs from the call's inputs."""
    if sample_baselines is None or tuple(sample_baselines.shape) == tuple(inputs.shape):
        return
    raise InvalidParameterError(
        f"{method}: sample_baselines has shape {tuple(sample_baselines.shape)} for inputs of shape "
        f"{tuple(inputs.shape)}; give one reference per input, in the same order. (run() explains a "
        "data set in blocks: there, use baseline= or baselines=.)"
    )


def reference_set(
    method: str,
    baseline: float | Tensor,
    baselines: Tensor | None,
    inputs: Tensor,
    *,
    sample_baselines: Tensor | None = None,
    position: Tensor | None = None,
) -> Tensor:
    """The references as (B, N, C, H, W) for ``inputs`` (N, C, H, W): the set, the per-sample ones
    (rows ``position`` of ``sample_baselines``, B = 1) or the one baseline (B = 1)."""
    if sample_baselines is not None:
        if position is None:
            raise InvalidParameterError(
                f"{method}: sample_baselines need the samples' positions in the call (Batch.position)."
            )
        return sample_baselines.to(device=inputs.device, dtype=inputs.dtype)[position.to(inputs.device)].unsqueeze(0)
    if baselines is None:
        return baseline_like(method, baseline, inputs).unsqueeze(0)
    refs = baselines.to(device=inputs.device, dtype=inputs.dtype)
    if refs.shape[1:] != inputs.shape[1:]:
        raise InvalidParameterError(
            f"{method}: baselines of shape {tuple(refs.shape[1:])} per image do not match inputs of shape "
            f"{tuple(inputs.shape[1:])}."
        )
    return refs.unsqueeze(1).expand(-1, inputs.shape[0], *inputs.shape[1:])
