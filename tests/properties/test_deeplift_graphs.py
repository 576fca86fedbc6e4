"""DeepLIFT sums to f(x) - f(baseline) on random graphs that mix linear layers, every non-linearity it
has a rule for, products of activations, overlapping max pooling, layer norm, softmax and attention."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from xai_bench import explain

ACTIVATIONS = {
    "relu_inplace": lambda t: F.relu(t, inplace=True),
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "elu": F.elu,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
    "softplus": F.softplus,
    "mish": F.mish,
    "square": lambda t: t**2,
    "sqrt": lambda t: torch.sqrt(t * t + 1),
    "rsqrt": lambda t: (t * t + 1).rsqrt(),
    "exp": lambda t: torch.exp(torch.tanh(t)),
    "reciprocal": lambda t: 1 / (1 + torch.sigmoid(t)),
    "silu_by_hand": lambda t: t * torch.sigmoid(t),  # a product of two activations
}
BLOCKS = [*ACTIVATIONS, "gate", "quotient", "max_pool", "layer_norm", "softmax", "attention", "matmul"]


class RandomGraph(nn.Module):
    """A stem convolution, then ``blocks`` in order (each with its own convolution), then a linear head."""

    def __init__(self, blocks: list[str], width: int = 4) -> None:
        super().__init__()
        self.blocks = blocks
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in blocks)
        self.gates = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in blocks)
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.stem(x)
        for block, conv, gate in zip(self.blocks, self.convs, self.gates, strict=True):
            y = conv(x)
            if block in ACTIVATIONS:
                x = x + ACTIVATIONS[block](y)
            elif block == "gate":  # squeeze and excitation
                x = y * torch.sigmoid(gate(y.mean((2, 3), keepdim=True)))
            elif block == "quotient":
                x = y / (1 + torch.exp(gate(y).tanh()))
            elif block == "max_pool":  # overlapping windows
                x = F.max_pool2d(y, 3, stride=1, padding=1)
            elif block == "layer_norm":
                x = self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            elif block == "softmax":
                x = y * F.softmax(gate(y), dim=1)
            elif block == "attention":
                n, c, h, w = y.shape
                tokens = y.flatten(2).transpose(1, 2)
                q, k, v = self.qkv(tokens).chunk(3, dim=-1)
                x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, c, h, w)
            elif block == "matmul":
                t = y.flatten(2)
                x = (t @ t.transpose(1, 2) @ gate(y).flatten(2)).reshape(y.shape) / 16
        return self.head(x.mean((2, 3)))


@given(
    seed=st.integers(0, 2**16),
    blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4),
    n=st.integers(1, 3),
)
def test_deeplift_sums_to_delta_on_random_graphs_of_every_supported_operation(seed, blocks, n):
    torch.manual_seed(seed)
    model = RandomGraph(blocks).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64)
    baseline = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    ds = explain(model, x, targets="all", methods={"deeplift": {"baseline": baseline}})
    with torch.no_grad():
        expected = (model(x) - model(baseline.unsqueeze(0))).numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(ds["deeplift"].values.sum(axis=(2, 3, 4)), expected, atol=1e-10 * scale)
