"""Tiny models whose attributions can be computed by hand, including the awkward ReLU patterns."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LinearModel(nn.Module):
    """``logits = W · flatten(x) + b``: saliency is |W[t]|, input × gradient is W[t] ⊙ x."""

    def __init__(self, in_shape: tuple[int, int, int] = (1, 4, 4), num_classes: int = 3) -> None:
        super().__init__()
        self.in_shape = in_shape
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class AdditiveModel(nn.Module):
    """``logit_k = sum(weight[k] * tanh(x))``: occluding a patch with 0 removes exactly its terms."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (K, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("nchw,kchw->nk", torch.tanh(x), self.weight)


class ReluNet(nn.Module):
    """Small CNN with every ReLU pattern that breaks rule-based methods.

    One ``ReLU(inplace=True)`` module re-used at two call sites (torchvision's ResNet habit),
    a functional ``F.relu`` (DenseNet, Inception), a ``Tensor.relu_`` call, an overlapping
    max pooling beside a convolution branch (InceptionResNetV2's ``mixed_6a``) and a residual add.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 4, width: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.branch_conv = nn.Conv2d(width, width, 3, stride=2)
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.conv3 = nn.Conv2d(2 * width, width, 1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv1(x))
        y = self.bn(self.conv2(x))
        x = self.relu(y + x)
        x = torch.cat([self.branch_conv(x), self.branch_pool(x)], dim=1)
        x = F.relu(self.conv3(x), inplace=True)
        x = F.max_pool2d(x, 2, 1).relu_()
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class FunctionalReluMLP(nn.Module):
    """Fully connected net with a random mix of module, re-used, in-place and functional ReLUs."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, styles: list[str]) -> None:
        super().__init__()
        sizes = [in_features, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.head = nn.Linear(sizes[-1], num_classes)
        self.shared = nn.ReLU(inplace=True)
        self.styles = styles

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer, style in zip(self.layers, self.styles, strict=False):
            x = layer(x)
            if style == "shared_inplace":
                x = self.shared(x)
            elif style == "functional":
                x = F.relu(x)
            elif style == "method_inplace":
                x = x.relu_()
            else:
                x = torch.relu(x)
        return self.head(x)


class TupleOutputModel(nn.Module):
    """Returns (logits, aux) like inception in training mode: not accepted as is."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.fc(x.flatten(1))
        return out, out


class ProductModel(nn.Module):
    """Multiplies two activations: no exact DeepLIFT rule exists for it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3 * 8 * 8, 4)
        self.b = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return torch.relu(self.a(x)) * self.b(x)


def tiny_cnn(num_classes: int = 4, in_channels: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> ReluNet:
    """A seeded :class:`ReluNet` in eval mode, float64 by default for exact comparisons."""
    torch.manual_seed(seed)
    model = ReluNet(in_channels=in_channels, num_classes=num_classes).to(dtype).eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def plain_cnn(seed: int = 3) -> nn.Module:
    """A float64 CNN on which captum is exact for every method: distinct ReLU modules, no max pooling."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).double().eval()  # fmt: skip


def tiny_cnn32() -> ReluNet:
    """The conformance CNN in float32: a factory for command-line runs on image files."""
    return tiny_cnn(dtype=torch.float32)


def unseeded_cnn() -> ReluNet:
    """A factory with weights from torch's global random state: other weights on every call (for tests)."""
    return ReluNet().double().eval()


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give ``model`` random weights everywhere and random batch-norm statistics, in place, and return it.

    Initialisations that zero a head or scale residual branches by 1e-6 leave a fresh model's logits
    nearly flat, which hides whether attribution maps add up; a trained model has neither. Weights
    are normal with variance 1/fan-in; scales near one; biases, shifts and running means small;
    running variances between 0.2 and 0.4.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "scale" not in name and "gamma" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
            elif name.endswith(("weight", "gamma")) or "scale" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.2 + 0.2)
    return model
