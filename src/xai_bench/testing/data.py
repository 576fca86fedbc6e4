"""A deterministic map-style image dataset for tests of dataset-scale runs."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from .models import tiny_cnn


class SyntheticImages(torch.utils.data.Dataset):
    """``n`` seeded random images; item ``i`` is always the same, in any process."""

    def __init__(self, n: int = 10, size: int = 12, channels: int = 3, dtype: torch.dtype = torch.float64) -> None:
        self.n = n
        self.size = size
        self.channels = channels
        self.dtype = dtype
        self.sample_ids = [f"img-{i:03d}" for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, object]:
        gen = torch.Generator().manual_seed(1000 + index)
        image = torch.rand(self.channels, self.size, self.size, generator=gen, dtype=self.dtype)
        return {"image": image, "id": self.sample_ids[index]}


class Slow(nn.Module):
    """Wraps a model and sleeps on every forward pass, so a run can be interrupted part-way."""

    def __init__(self, inner: nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner = inner
        self.seconds = seconds

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(self.seconds)
        return self.inner(x)


def slow_tiny_cnn() -> nn.Module:
    """The conformance CNN, 50 ms slower per forward pass."""
    return Slow(tiny_cnn(), 0.05).eval()


def maps_dataset(maps: Any, targets: Any, *, method: str = "given", inputs: Any = None) -> Any:
    """A Dataset laid out as ``explain`` returns it, from maps you made yourself (for metric tests).

    ``maps`` (N, T, C, H, W) of the classes ``targets`` (T ints, the same for every sample);
    ``inputs`` (N, C, H, W), if given, are kept as ``explain`` keeps them.
    """
    import json

    import numpy as np

    from ..storage.datasets import TargetTable, build_dataset

    values = np.asarray(maps, dtype=np.float64)
    n, t = values.shape[:2]
    index = np.broadcast_to(np.asarray(targets, dtype=np.int64), (n, t)).copy()
    return build_dataset(
        maps={method: values},
        deltas={},
        method_attrs={method: {"method": method, "params": "{}"}},
        scores=np.zeros((n, t)),
        sample_ids=list(range(n)),
        targets=TargetTable("dense", index),
        attrs={"methods": json.dumps([method]), "task": "multiclass"},
        inputs=None if inputs is None else np.asarray(inputs, dtype=np.float64),
    )
