"""LRP conserves relevance: with the epsilon rule and epsilon going to 0, on random graphs of layers
without biases, ReLUs, average pooling, residual additions and concatenations, each map sums to the
target's score."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from xai_bench import explain

BLOCKS = ["conv", "relu", "avg_pool", "residual", "concatenation", "linear"]


class RandomGraph(nn.Module):
    """A stem convolution, ``blocks`` in order, a global average and a linear head; no biases anywhere."""

    def __init__(self, blocks: list[str], width: int) -> None:
        super().__init__()
        self.blocks = blocks

        def conv(k: int = 3, out: int = width) -> nn.Conv2d:
            return nn.Conv2d(width, out, k, padding=k // 2, bias=False)

        self.stem = nn.Conv2d(2, width, 3, padding=1, bias=False)
        self.layers = nn.ModuleList()
        for block in blocks:
            if block == "conv":
                self.layers.append(conv())
            elif block == "relu":
                self.layers.append(nn.ReLU())
            elif block == "avg_pool":
                self.layers.append(nn.AvgPool2d(3, stride=1, padding=1))
            elif block == "residual":  # x + conv(relu(conv(x)))
                self.layers.append(nn.Sequential(conv(), nn.ReLU(), conv()))
            elif block == "concatenation":  # a 1x1 convolution of cat(conv(x), conv(x))
                self.layers.append(nn.ModuleList([conv(3, 2), conv(1, 3), nn.Conv2d(5, width, 1, bias=False)]))
            else:  # a fully connected layer over the channels, at every position
                self.layers.append(nn.Linear(width, width, bias=False))
        self.head = nn.Linear(width, 3, bias=False)

    def forward(self, x):
        x = self.stem(x)
        for block, layer in zip(self.blocks, self.layers, strict=True):
            if block == "residual":
                x = x + layer(x)
            elif block == "concatenation":
                a, b, mix = layer
                x = mix(torch.cat([a(x), b(x)], 1))
            elif block == "linear":
                x = layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            else:
                x = layer(x)
        return self.head(x.mean((2, 3)))


@given(
    seed=st.integers(0, 2**16),
    blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=5),
    width=st.integers(2, 4),
)
def test_epsilon_rule_maps_sum_to_the_target_score(seed, blocks, width):
    torch.manual_seed(seed)
    model = RandomGraph(blocks, width).double().eval()
    x = torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    tiny = 1e-9
    ds = explain(model, x, methods={"lrp": {"composite": "epsilon", "epsilon": tiny, "stabilizer": tiny}},
                 targets=[0, 1, 2])  # fmt: skip
    with torch.no_grad():
        scores = model(x).numpy()
    sums = ds["lrp"].values.sum(axis=(2, 3, 4))
    # Each unit keeps R z / (z + eps) of its relevance R, which is proportional to z: the sum misses eps times
    # the units' gradients, an error of order eps whatever the score (far below 1e-6 of the largest score).
    np.testing.assert_allclose(sums, scores, rtol=1e-6, atol=1e-6 * np.abs(scores).max())
