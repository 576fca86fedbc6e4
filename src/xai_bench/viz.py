"""Pictures of attribution maps (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr


def _reduce(maps: xr.DataArray) -> np.ndarray:
    return maps.sum("channel").values


def plot_maps(
    ds: xr.Dataset,
    *,
    samples: Sequence[Any] | None = None,
    target: Any | None = None,
    methods: Sequence[str] | None = None,
    images: np.ndarray | None = None,
    percentile: float = 99.0,
):
    """Return a figure with one row per sample: the image (if given), then each method's map.

    Maps are summed over channels. Signed maps use a diverging colormap centred on zero (red
    raises the score, blue lowers it); non-negative maps (absolute saliency) use a sequential one.
    Colour limits clip at ``percentile`` of |map| so a few extreme pixels do not wash out the rest.
    ``target`` defaults to each sample's highest-scoring target among those with maps.
    """
    import matplotlib.pyplot as plt

    methods = list(methods or [v for v in ds.data_vars if v in ds and ds[v].dims[-2:] == ("y", "x")])
    samples = list(samples if samples is not None else ds["sample"].values)
    cols = len(methods) + (images is not None)
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.2 * cols, 2.3 * len(samples)), squeeze=False)
    for row, sample in enumerate(samples):
        t = target if target is not None else _best_target(ds, sample, methods[0])
        col = 0
        if images is not None:
            idx = list(ds["sample"].values).index(sample)
            img = np.asarray(images[idx])
            img = img.transpose(1, 2, 0) if img.shape[0] in (3,) else img[0]
            axes[row, 0].imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None)
            axes[row, 0].set_title(f"{sample}\ntarget {t}", fontsize=8)
            col = 1
        for method in methods:
            ax = axes[row, col]
            m = _reduce(ds[method].sel(sample=sample, target=t))
            limit = float(np.nanpercentile(np.abs(m), percentile)) or 1.0
            if np.nanmin(m) >= 0:
                ax.imshow(m, cmap="magma", vmin=0, vmax=limit)
            else:
                ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
            if row == 0:
                ax.set_title(method.replace("_", " "), fontsize=8)
            col += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _best_target(ds: xr.Dataset, sample: Any, method: str) -> Any:
    have = ~np.isnan(ds[method].sel(sample=sample).isel(channel=0, y=0, x=0).values)
    scores = np.where(have, ds["score"].sel(sample=sample).values, -np.inf)
    return ds["target"].values[int(np.argmax(scores))]
