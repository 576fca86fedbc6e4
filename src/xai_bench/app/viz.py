"""Pictures of attribution maps (matplotlib)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..storage.datasets import layout_of, select_map


def overlay(
    image: Any,
    attribution: Any,
    *,
    alpha: float = 0.5,
    signed: bool | None = None,
    cmap: str | None = None,
    percentile: float | None = 99.0,
) -> np.ndarray:
    """Blend a map over its image: an RGB array (H, W, 3) in [0, 1], no figure needed.

    ``image`` is (C, H, W), (H, W, C) or (H, W) with values in [0, 1] (grey is repeated to RGB);
    ``attribution`` is (C, H, W) or (H, W), a tensor, array or DataArray, summed over channels.
    Signed maps (``signed=None``: any negative value) use a diverging colormap centred at zero
    (red raises the score, blue lowers it); unsigned ones a sequential colormap from zero. Colour
    limits clip at ``percentile`` of |map| (``None``: the maximum), so a few extreme pixels do
    not wash out the rest. ``alpha`` is the map's weight in the blend.
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}.")
    rgb = _as_rgb(_as_array(image))
    m = _as_array(attribution)
    m = m.sum(0) if m.ndim == 3 else m
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"the map is {m.shape} but the image is {rgb.shape[:2]}; they must have the same size.")
    m = np.nan_to_num(m)
    signed = bool((m < 0).any()) if signed is None else signed
    magnitude = np.abs(m)
    limit = float(np.percentile(magnitude, percentile) if percentile is not None else magnitude.max()) or 1.0
    if signed:
        values, name = 0.5 + 0.5 * np.clip(m / limit, -1.0, 1.0), cmap or "RdBu_r"
    else:
        values, name = np.clip(m / limit, 0.0, 1.0), cmap or "magma"
    colours = colormaps[name](values)[..., :3]
    return np.clip((1.0 - alpha) * rgb + alpha * colours, 0.0, 1.0)


def _as_array(value: Any) -> np.ndarray:
    """A float64 numpy array from a tensor (any device), a DataArray or an array."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    elif isinstance(value, xr.DataArray):
        value = value.values
    return np.asarray(value, dtype=np.float64)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    elif image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (C, H, W), (H, W, C) or (H, W) with 1 or 3 channels, got {image.shape}.")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


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

    methods = list(methods or [v for v in ds.data_vars if ds[v].dims[-3:] == ("channel", "y", "x")])
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
            m = _reduce(select_map(ds, method, sample=sample, target=t))
            limit = float(np.nanpercentile(np.abs(m), percentile)) or 1.0
            if np.nanmin(m) >= 0:
                ax.imshow(m, cmap="magma", vmin=0, vmax=limit)
            else:
                ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
            if row == 0:
                ax.set_title(method.replace("_", " "), fontsize=8)
            col += 1
    return _finish(fig, axes)


def _finish(fig, axes):
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _best_target(ds: xr.Dataset, sample: Any, method: str) -> Any:
    """The highest-scoring target of ``sample`` that has a map (either layout)."""
    row = ds.sel(sample=sample)
    have = ~np.isnan(row[method].isel(channel=0, y=0, x=0).values)
    scores = np.where(have, row["score"].values, -np.inf)
    column = int(np.argmax(scores))
    key = "target_index" if layout_of(ds) == "slot" and ds["target"].dtype.kind in "iu" else "target"
    return np.atleast_1d(row[key].values)[column]


def _diverging(ax, image: np.ndarray, percentile: float = 99.0) -> None:
    limit = float(np.nanpercentile(np.abs(image), percentile)) or 1.0
    ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)


def plot_naps(ds: xr.Dataset, layer: str, *, top: int | None = None, input_layer: str | None = "input"):
    """Return a figure of one layer's profiles, a row per group, like the NAP figures of Krug et al.

    First column: the group's average input (if the input was profiled); then the NAPs of the
    layer's ``top`` highest-scoring feature maps, on a diverging colormap centred on zero (red: the
    group activates the map more than the average group; blue: less).
    """
    import matplotlib.pyplot as plt

    if layer not in ds:
        profiled = sorted(json.loads(ds.attrs["layers"])) if "layers" in ds.attrs else []
        raise KeyError(f"no profile for layer {layer!r}; profiled: {profiled}")
    ranked = ds[f"{layer}_top"].values
    channels = ranked[: top or len(ranked)]
    show_input = input_layer is not None and f"{input_layer}_group_mean" in ds
    groups = ds["group"].values
    cols = len(channels) + show_input
    fig, axes = plt.subplots(len(groups), cols, figsize=(2.2 * cols, 2.2 * len(groups)), squeeze=False)
    channel_dim = ds[layer].dims[1]
    for row, group in enumerate(groups):
        col = 0
        if show_input:
            mean = ds[f"{input_layer}_group_mean"].sel(group=group).mean(ds[f"{input_layer}_group_mean"].dims[1])
            axes[row, 0].imshow(mean.values, cmap="gray")
            axes[row, 0].set_title(f"{group}\naverage input", fontsize=8)
            col = 1
        for channel in channels:
            nap = ds[layer].sel(group=group).isel({channel_dim: int(channel)}).values
            _diverging(axes[row, col], np.atleast_2d(nap))
            if row == 0:
                score = float(ds[f"{layer}_score"].values[int(channel)])
                axes[row, col].set_title(f"{layer} map {int(channel)}\nscore {score:.2g}", fontsize=8)
            col += 1
    return _finish(fig, axes)


def plot_dead_feature_maps(ds: xr.Dataset):
    """Return a bar chart of the share of dead feature maps per layer."""
    import matplotlib.pyplot as plt

    shares = ds["dead_share"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * shares.sizes["layer"], 3))
    ax.bar([str(v) for v in shares["layer"].values], 100 * shares.values, color="#555")
    ax.set_ylabel("dead feature maps (%)")
    ax.set_ylim(0, 100)
    threshold = ds.attrs.get("dead_threshold", 0.0)
    ax.set_title(
        f"never above {threshold:g}; overall {100 * ds.attrs.get('dead_share_overall', np.nan):.1f}%", fontsize=9
    )
    fig.tight_layout()
    return fig
