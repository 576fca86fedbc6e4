"""How inputs were normalised, so that pictures can show the images as they were."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidParameterError

#: torchvision's ImageNet statistics, which its pretrained weights expect
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std``, as torchvision's ``Normalize``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> str:
        return json.dumps({"mean": list(self.mean), "std": list(self.std)})

    @classmethod
    def from_json(cls, text: str) -> Normalization:
        values = json.loads(text)
        return cls(tuple(values["mean"]), tuple(values["std"]))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Normalise a (C, H, W) image."""
        mean, std = self._column(self.mean, image), self._column(self.std, image)
        return (image - mean) / std

    def undo(self, image: np.ndarray) -> np.ndarray:
        """The (C, H, W) image before normalisation, for display."""
        mean, std = self._column(self.mean, image), self._column(self.std, image)
        return image * std + mean

    def _column(self, values: tuple[float, ...], image: np.ndarray) -> np.ndarray:
        if len(values) not in (1, image.shape[0]):
            raise InvalidParameterError(
                f"the normalisation has {len(values)} channel values but the image has {image.shape[0]} channels."
            )
        return np.asarray(values, dtype=image.dtype).reshape(-1, 1, 1)

    def check_channels(self, channels: int) -> None:
        """Refuse a normalisation with per-channel values for another number of channels."""
        if len(self.mean) not in (1, channels):
            raise InvalidParameterError(
                f"input_normalization has {len(self.mean)} channel values but the inputs have {channels} channels."
            )


def check_normalization(value: Any) -> Normalization | None:
    """Accept None, ``"imagenet"``, ``(mean, std)`` sequences, ``{"mean": ..., "std": ...}`` or a Normalization.

    On the command line: ``imagenet``, or the means then the standard deviations as one comma
    list (``0.5,0.25`` for one channel; six numbers for three).
    """
    if value is None or isinstance(value, Normalization):
        return value
    if isinstance(value, str):
        if value.strip().lower() == "imagenet":
            return Normalization(*IMAGENET)
        try:
            numbers = [float(part) for part in value.split(",")]
        except ValueError:
            numbers = []
        if not numbers or len(numbers) % 2:
            raise InvalidParameterError(
                f"normalisation {value!r}: give 'imagenet' or the means then the standard deviations as one comma "
                "list, e.g. '0.5,0.25' (one channel) or '0.485,0.456,0.406,0.229,0.224,0.225' (three)."
            )
        half = len(numbers) // 2
        value = (numbers[:half], numbers[half:])
    if isinstance(value, Mapping):
        value = (value.get("mean"), value.get("std"))
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        value = ((value[0],), (value[1],))  # one channel, as torchvision's Normalize(0.5, 0.25)
    if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, Sequence) for v in value)):
        raise InvalidParameterError(
            f"normalisation must be 'imagenet', (mean, std) or {{'mean': [...], 'std': [...]}}, got {value!r}."
        )
    mean, std = (tuple(float(v) for v in part) for part in value)
    if len(mean) != len(std) or not mean:
        raise InvalidParameterError(f"normalisation: {len(mean)} means but {len(std)} standard deviations.")
    if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(s) and s > 0 for s in std):
        raise InvalidParameterError(f"normalisation: means must be finite and standard deviations > 0, got {value!r}.")
    return Normalization(mean, std)
