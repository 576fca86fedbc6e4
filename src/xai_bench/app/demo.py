"""The demo: train a tiny CNN on generated shapes, explain it with every method, save a store and a figure."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..api.explaining import explain
from ..attributors.builtin import BUILTIN_METHODS
from ..testing.models import ReluNet

CLASSES = ("disc", "bar")


@dataclass(frozen=True)
class DemoResult:
    store: Path
    figure: Path
    accuracy: float
    inside_share: dict[str, float]
    max_delta: dict[str, float]


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


def train(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int = 0) -> ReluNet:
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


def run_demo(
    out_dir: str | os.PathLike[str] = "demo_out", *, steps: int = 300, n_explain: int = 4, seed: int = 0
) -> DemoResult:
    """Train, explain ``n_explain`` held-out images with all six methods, write ``maps.zarr`` and ``maps.png``."""
    import matplotlib

    matplotlib.use("Agg")
    from .viz import plot_maps

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, _ = make_shapes(512, seed=seed)
    x_test, y_test, masks = make_shapes(64, seed=seed + 1)
    model = train(x_train, y_train, steps, seed)
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    store = out / "maps.zarr"
    ds = explain(
        model,
        x_test[:n_explain],
        methods={
            "occlusion": {"window": 6, "stride": 2},
            "saliency": {},
            "input_x_gradient": {},
            "guided_backprop": {},
            "integrated_gradients": {"n_steps": 32},
            "deeplift": {},
        },
        targets="predicted",
        labels=list(CLASSES),
        sample_ids=[f"shape-{i}" for i in range(n_explain)],
        store=store,
        overwrite=True,  # each demo run replaces the last one's maps
        progress=True,
    )
    inside: dict[str, float] = {}
    for method in BUILTIN_METHODS:
        values = np.nansum(np.abs(ds[method].values), axis=(1, 2))  # (N, H, W); NaN = not a predicted target
        m = masks[:n_explain].numpy()
        inside[method] = float((values * m).sum() / max(values.sum(), 1e-12))
    max_delta = {m: float(np.nanmax(np.abs(ds[f"{m}_delta"].values))) for m in ("integrated_gradients", "deeplift")}
    figure = out / "maps.png"
    fig = plot_maps(ds)  # the inputs are in the Dataset
    fig.savefig(figure, dpi=110)
    return DemoResult(store, figure, accuracy, inside, max_delta)
