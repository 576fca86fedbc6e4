"""The paper's preprocessing: bicubic resize of the longer side, percentile clipping, [0, 1], zero padding
to a square, three channels; with the exact mask of the padded pixels, where the study's shortcut lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Prepared:
    image: torch.Tensor  # (channels, size, size) in [0, 1]
    padding: torch.Tensor  # (size, size) bool: True on the zero-padded bands


def prepare(
    source: str | Path | Image.Image | np.ndarray,
    *,
    size: int = 512,
    low: float = 1.0,
    high: float = 95.0,
    channels: int = 3,
) -> Prepared:
    """Load (any mode: L, RGB, RGBA) as grey, resize its longer side to ``size`` (bicubic), clip to its
    ``low``-``high`` percentiles, scale to [0, 1], zero-pad the shorter side to a square (centred) and
    repeat to ``channels``. Percentiles are those of the image itself, before padding."""
    if isinstance(source, (str, Path)):
        with Image.open(source) as img:
            grey = _grey(img)
    elif isinstance(source, Image.Image):
        grey = _grey(source)
    else:
        grey = Image.fromarray(np.asarray(source, dtype=np.float32), mode="F")
    w, h = grey.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(grey.resize((new_w, new_h), Image.BICUBIC), dtype=np.float64)
    lo, hi = np.percentile(resized, [low, high])
    scaled = (np.clip(resized, lo, hi) - lo) / (hi - lo) if hi > lo else np.zeros_like(resized)
    canvas = np.zeros((size, size))
    padding = np.ones((size, size), dtype=bool)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = scaled
    padding[top : top + new_h, left : left + new_w] = False
    image = torch.from_numpy(canvas.astype(np.float32))[None].expand(channels, -1, -1).contiguous()
    return Prepared(image, torch.from_numpy(padding))


def _grey(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L").convert("F")
