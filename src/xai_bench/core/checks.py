"""Argument checks and JSON helpers shared by every layer."""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import InvalidParameterError


def positive_int(name: str, value: Any, *, owner: str | None = None) -> int:
    """Return ``value`` if it is a positive int (not a bool), else raise naming ``owner: name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        where = f"{owner}: {name}" if owner else name
        raise InvalidParameterError(f"{where} must be a positive int, got {value!r}.")
    return int(value)


def batch_size_arg(batch_size: object) -> int | None:
    """Validate the one batching knob: ``"auto"`` (returns None) or a positive number of images per pass."""
    if batch_size == "auto":
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(
            f"batch_size must be 'auto' or a positive int (images per pass), got {batch_size!r}."
        )
    return int(batch_size)


def json_safe(value: Any) -> Any:
    """Turn parameter values into something JSON can hold."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return float(value.item())
        # The checksum tells two tensors of one shape apart in provenance (and in tuning keys).
        raw = value.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
        return f"tensor(shape={list(value.shape)}, dtype={value.dtype}, crc32={zlib.crc32(raw):08x})"
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    return repr(value)


def to_json(value: Any) -> str:
    """Canonical JSON (sorted keys) for attrs and fingerprints."""
    return json.dumps(value, sort_keys=True)


def repeated_as_text(values: Sequence[Any]) -> list[str]:
    """The values that repeat once written as text (as stores keep ids and names), sorted; [] when none do."""
    counts = Counter(str(v) for v in values)
    return sorted(text for text, n in counts.items() if n > 1)
