"""The demo: train a tiny CNN on generated shapes, explain it with every method, save a store and a figure."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..api.explaining import explain
from ..api.passes import Passes
from ..api.targets import Targets
from ..attributors.builtin import BUILTIN_METHODS
from ..testing.shapes import CLASSES, make_shapes, train_shapes


@dataclass(frozen=True)
class DemoResult:
    store: Path
    figure: Path
    accuracy: float
    inside_share: dict[str, float]
    max_delta: dict[str, float]


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
    model = train_shapes(x_train, y_train, steps, seed)
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
        targets=Targets("predicted", class_names=list(CLASSES)),
        sample_ids=[f"shape-{i}" for i in range(n_explain)],
        store=store,
        overwrite=True,  # each demo run replaces the last one's maps
        passes=Passes(progress=True),
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
