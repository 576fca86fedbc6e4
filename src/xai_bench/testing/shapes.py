"""Generated shapes with known masks (a disc or a bar in noise) and a small CNN trained on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import ReluNet

CLASSES = ("disc", "bar")


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return noisy images (N, 3, size, size) of a disc or a bar, labels (N,) and object masks (N, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = 0.15 * torch.rand(n, 3, size, size, generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        cy, cx = torch.randint(8, size - 8, (2,), generator=gen).tolist()
        if labels[i] == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
        else:
            mask = ((yy - cy).abs() <= 1) & ((xx - cx).abs() <= 6)
        masks[i] = mask
        images[i, :, mask] += 0.8
    return images.clamp(0, 1), labels, masks


def train_shapes(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int = 0) -> ReluNet:
    """A small ReLU CNN trained for ``steps`` Adam steps to tell the shapes of :func:`make_shapes` apart."""
    torch.manual_seed(seed)
    model = ReluNet(in_channels=3, num_classes=len(CLASSES), width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (32,), generator=gen)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
