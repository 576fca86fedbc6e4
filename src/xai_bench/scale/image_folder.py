"""Image folders as map-style datasets for :func:`xai_bench.run` and the ``xai-bench run`` command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.errors import InvalidInputError
from ..core.normalization import check_normalization

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class ImageFolder(torch.utils.data.Dataset):
    """Every image under ``root`` (recursively, sorted), resized (bilinear) to ``size`` × ``size`` in [0, 1].

    Sample ids are the paths relative to ``root``. ``channels`` is 1 (grayscale) or 3 (RGB; a
    grayscale file is repeated to three channels). ``normalize`` (``"imagenet"`` or ``(mean, std)``)
    is then applied per channel, as torchvision's ``Normalize``, and kept as
    ``input_normalization`` for :func:`xai_bench.run` to record.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, size: int = 224, channels: int = 3, normalize: Any = None
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"No image folder at {os.fspath(root)!r}.")
        if channels not in (1, 3):
            raise InvalidInputError(f"channels must be 1 or 3, got {channels!r}.")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InvalidInputError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {os.fspath(root)!r}.")
        self.size = size
        self.channels = channels
        self.input_normalization = check_normalization(normalize)
        if self.input_normalization is not None and len(self.input_normalization.mean) not in (1, channels):
            raise InvalidInputError(
                f"normalize has {len(self.input_normalization.mean)} channel values for {channels}-channel images."
            )
        self.sample_ids = [p.relative_to(self.root).as_posix() for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, object]:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.channels == 1 else "RGB").resize((self.size, self.size), Image.BILINEAR)
                array = np.asarray(img, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidInputError(f"cannot read image {os.fspath(path)!r}: {exc}") from exc
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        if self.input_normalization is not None:
            array = self.input_normalization.apply(array)
        image: Tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return {"image": image.contiguous(), "id": self.sample_ids[index]}
